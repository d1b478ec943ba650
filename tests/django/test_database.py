"""Django's ORM from consumers against PostgreSQL: 200 clients, a bounded set of connections.

The server runs in its own process (``kanal serve``) with ``KANAL_SYNC_THREADS=16``; each of
200 WebSocket clients makes it run a query at the same time, through
``database_sync_to_async`` or straight from a sync consumer's handler. Every client is
answered; the connections PostgreSQL has open for the database (``pg_stat_activity``,
sampled all along) stay within the thread pool; and ``CONN_MAX_AGE`` is honoured as in
Django's request cycle: 0 closes each call's connection, 60 reuses it. Without kanal.django's
hooks, a sync consumer's thread keeps its connection whatever ``CONN_MAX_AGE`` says.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import psycopg
import pytest
import websockets
from _example import Running, example_process

from kanal.testing import free_port

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
KANAL = str(Path(sys.executable).with_name("kanal"))
CLIENTS = 200
THREADS = 16


def held_connections(pid: int, port: int) -> int:
    """TCP connections process ``pid`` holds open to ``port`` on loopback (from /proc).

    The client side closes synchronously, unlike the server's backend, which exits a little
    later; but a sync handler's connection is closed after its answer went out (the hooks
    run when the handler returns): see :func:`once_released`.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    held = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
        if remote_port == port and fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED
            held += 1
    return held


def admin(port: int) -> psycopg.Connection:
    # To the "postgres" database: not counted among the test database's connections.
    return psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
    )


def fresh_database(port: int, name: str) -> int:
    """Create ``name`` anew; return the server's ``max_connections``."""
    with admin(port) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{name}"')
        row = db.execute("SHOW max_connections").fetchone()
        assert row is not None
        return int(row[0])


def drop_database(port: int, name: str) -> None:
    with admin(port) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Peak:
    """The most connections to one database that ``pg_stat_activity`` showed at a time."""

    def __init__(self) -> None:
        self.value = 0
        self.samples = 0


@asynccontextmanager
async def sampled(port: int, name: str) -> AsyncIterator[Peak]:
    """Sample the database's server-side connections until the block ends."""
    peak = Peak()
    db = await psycopg.AsyncConnection.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
    )

    async def sample() -> None:
        while True:
            cursor = await db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            row = await cursor.fetchone()
            assert row is not None
            peak.value = max(peak.value, row[0])
            peak.samples += 1

    task = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await db.close()


async def ask(url: str) -> str:
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps("which connection?"))
        answer: str = json.loads(await ws.recv())["pid"]
        return answer


async def once_released(pid: int, port: int, within: float = 10.0) -> int:
    """:func:`held_connections` once none is held, or as it is after ``within`` seconds (the
    last handlers close theirs just after their answers reached the clients)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    # Polled: the kernel tells nothing when a socket closes in another process.
    while (held := held_connections(pid, port)) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return held


async def load(port: int, endpoint: str) -> list[str]:
    """All clients at once; the connection (backend) that answered each."""
    async with asyncio.timeout(60):
        return await asyncio.gather(
            *(ask(f"ws://127.0.0.1:{port}/ws/{endpoint}/") for _ in range(CLIENTS))
        )


@asynccontextmanager
async def server(
    pg_port: int, name: str, conn_max_age: int, **extra: str
) -> AsyncIterator[tuple[Running, int]]:
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "TEST_PG_PORT": str(pg_port),
        "TEST_PG_NAME": name,
        "TEST_CONN_MAX_AGE": str(conn_max_age),
        "KANAL_SYNC_THREADS": str(THREADS),
        "KANAL_LAYER": "memory://",
        **extra,
    }
    port = free_port()
    command = [KANAL, "serve", "project.asgi:application", "--port", str(port)]
    async with example_process(command, env, "kanal server ready") as running:
        yield running, port


@pytest.mark.parametrize("endpoint", ["db", "db-sync"])
@pytest.mark.parametrize("conn_max_age", [0, 60])
async def test_200_clients_share_a_bounded_set_of_connections(
    postgres: int, conn_max_age: int, endpoint: str
) -> None:
    name = f"kanal_test_{os.getpid()}"
    max_connections = fresh_database(postgres, name)
    try:
        async with (
            server(postgres, name, conn_max_age) as (process, port),
            sampled(postgres, name) as peak,
        ):
            answered = await load(port, endpoint)
            if conn_max_age:
                held = held_connections(process.pid, postgres)
            else:
                held = await once_released(process.pid, postgres)
            if conn_max_age:
                again = await load(port, endpoint)
    finally:
        drop_database(postgres, name)
    assert len(answered) == CLIENTS  # all answered: no "too many clients"
    assert peak.samples > 1
    print(
        f"{endpoint} CONN_MAX_AGE={conn_max_age}: {len(set(answered))} connections, "
        f"peak {peak.value} open of {max_connections}, {held} held after"
    )
    if conn_max_age == 0:
        # Every call had a connection of its own, closed once it was over: nothing is held.
        assert len(set(answered)) == CLIENTS
        assert held == 0
        # Closed backends take a moment to leave pg_stat_activity: a few more than the
        # threads may be seen at once, never one per client.
        assert peak.value <= min(max_connections, 2 * THREADS)
    else:
        # At most one connection per thread, kept and reused by the next calls.
        assert 0 < len(set(answered)) <= THREADS
        assert 0 < held <= THREADS
        assert set(again) <= set(answered)
        assert peak.value <= THREADS


async def test_without_the_hooks_a_sync_consumer_keeps_its_connections(postgres: int) -> None:
    """What the hooks are for: ``CONN_MAX_AGE = 0`` is ignored, each thread keeps one."""
    name = f"kanal_test_{os.getpid()}"
    fresh_database(postgres, name)
    try:
        async with server(postgres, name, 0, TEST_NO_HOOKS="1") as (process, port):
            answered = await load(port, "db-sync")
            held = held_connections(process.pid, postgres)
    finally:
        drop_database(postgres, name)
    assert len(answered) == CLIENTS
    print(f"db-sync without the hooks: {len(set(answered))} connections, {held} held after")
    assert len(set(answered)) <= THREADS  # reused although CONN_MAX_AGE is 0
    assert held == len(set(answered))  # and still open


async def ask_or_fail(url: str) -> str | None:
    """The answer, or ``None`` if the server closed the socket instead (the query failed)."""
    try:
        return await ask(url)
    except websockets.ConnectionClosedError:
        return None


async def test_connections_the_database_dropped_are_replaced(postgres: int) -> None:
    """Django's rule for a failed connection: closed after the call that failed, so the
    thread's next call opens a new one (without the hooks it would fail for ever)."""
    name = f"kanal_test_{os.getpid()}"
    fresh_database(postgres, name)
    try:
        async with server(postgres, name, 60) as (_, port):
            before = set(await load(port, "db-sync"))
            with admin(postgres) as db:  # what a database restart does to them
                db.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
            url = f"ws://127.0.0.1:{port}/ws/db-sync/"
            async with asyncio.timeout(60):
                first = await asyncio.gather(*(ask_or_fail(url) for _ in range(CLIENTS)))
            after = await load(port, "db-sync")
    finally:
        drop_database(postgres, name)
    failed = first.count(None)
    # Each thread's dead connection fails one call at most, then is replaced.
    assert 0 < failed <= THREADS
    assert not set(after) & before  # every connection now is a new one
    assert len(after) == CLIENTS
