"""Django's stale-connection closing around sync calls, in-process (SQLite, ``CONN_MAX_AGE=0``).

``tests/django/test_database.py`` measures the same against PostgreSQL in a real server.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kanal.consumers import SyncConsumer
from kanal.django import database_sync_to_async
from kanal.testing import ApplicationCommunicator

pytestmark = pytest.mark.usefixtures("kanal_django")


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """The threads in which Django opened a database connection, one entry per connection."""
    from django.db.backends.signals import connection_created

    seen: list[str] = []

    def record(**kwargs: Any) -> None:
        seen.append(threading.current_thread().name)

    connection_created.connect(record, weak=False, dispatch_uid="test-opened")
    yield seen
    connection_created.disconnect(dispatch_uid="test-opened")


def query() -> int:
    from django.contrib.auth.models import User

    return User.objects.count()


class Counter:
    """``database_sync_to_async`` on a method, as Channels' documentation uses it."""

    def __init__(self) -> None:
        self.calls = 0

    @database_sync_to_async
    def count(self, plus: int) -> tuple[int, str]:
        self.calls += 1
        return query() + plus, threading.current_thread().name


async def test_database_sync_to_async_gives_each_call_a_fresh_connection(
    opened: list[str],
) -> None:
    counter = Counter()
    for _ in range(5):
        count, thread = await counter.count(0)
        assert count >= 0 and thread.startswith("kanal-sync")
    assert counter.calls == 5
    # CONN_MAX_AGE is 0: each call's connection was closed after it, as after a request.
    assert len(opened) == 5


async def test_a_sync_consumer_handler_gives_each_call_a_fresh_connection(
    opened: list[str],
) -> None:
    class Jobs(SyncConsumer):
        uses_channel_layer = False

        def job_run(self, message: dict[str, Any]) -> None:
            self.send({"type": "job.done", "count": query()})

    jobs = ApplicationCommunicator(Jobs.as_asgi(), {"type": "custom"})
    for _ in range(3):
        await jobs.send_input({"type": "job.run"})
        assert (await jobs.receive_output(timeout=10))["type"] == "job.done"
    await jobs.stop()
    assert len(opened) == 3


def test_the_hooks_do_nothing_in_a_process_without_django_settings() -> None:
    """A process that imports kanal.django but configures no settings (a plain kanal app in a
    project that has Django around) still runs its sync handlers."""
    import subprocess
    import sys

    script = (
        "import asyncio\n"
        "from kanal.consumers import run_sync\n"
        "from kanal.django._db import install_connection_hooks\n"
        "install_connection_hooks()\n"
        "print(asyncio.run(run_sync(lambda: 'ran')))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ran"
