"""Fixtures shared by the whole suite."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest


@pytest.fixture(scope="session")
def django_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Configure Django once per test session with minimal settings (idempotent).

    Tests change what they need with ``django.test.override_settings``. The database is a
    file, not ``:memory:``: ORM calls run in threads, and each thread would get its own
    empty in-memory database.
    """
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="kanal-tests-only",
            INSTALLED_APPS=[
                "django.contrib.auth",
                "django.contrib.contenttypes",
                "django.contrib.sessions",
                "channels",
            ],
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.sqlite3",
                    "NAME": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
                }
            },
            ROOT_URLCONF=[],
            ALLOWED_HOSTS=["*"],
            CHANNEL_LAYERS={"default": {"BACKEND": "kanal.layers.InMemoryChannelLayer"}},
            USE_TZ=True,
        )
        import django

        django.setup()


@pytest.fixture
def signal_fallbacks() -> Iterator[list[int]]:
    """Python handlers for SIGTERM and SIGINT that record the signals reaching them.

    A test that really delivers these signals uses it, so that a signal the code under test
    fails to handle fails the test (it shows up here) instead of ending the test run.
    """
    reached: list[int] = []

    def record(signum: int, _frame: FrameType | None) -> None:
        reached.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield reached
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A new directory with a short path (Unix socket paths are limited to ~100 bytes,
    which pytest's ``tmp_path`` plus a layer's own names can exceed)."""
    import shutil
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="k"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
