"""``database_sync_to_async`` against PostgreSQL: 200 clients, a bounded number of connections.

The server runs in its own process (``kanal serve``) with ``KANAL_SYNC_THREADS=16``; each of
200 WebSocket clients makes it run a query through ``database_sync_to_async`` at the same
time. Every client is answered (a connection per client would be refused: the test's own
cluster allows 40), the connections open at once stay within the thread pool, and stale ones
are closed as Django's request cycle closes them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from contextlib import suppress
from pathlib import Path

import pytest
import websockets
from _example import example_process

from kanal.testing import free_port

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
KANAL = str(Path(sys.executable).with_name("kanal"))
CLIENTS = 200
THREADS = 16


def held_connections(pid: int, port: int) -> int:
    """TCP connections process ``pid`` holds open to ``port`` on loopback (from /proc).

    The client side closes synchronously, unlike the server's backend, which exits a little
    later: what the process holds is known the moment it answered.
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


def fresh_database(port: int, name: str) -> None:
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
    ) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{name}"')


async def ask(url: str) -> int:
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps("count"))
        answer: int = json.loads(await ws.recv())["connections"]
        return answer


@pytest.mark.parametrize("conn_max_age", [0, 60])
async def test_200_clients_share_a_bounded_set_of_connections(
    postgres: tuple[int, int | None], conn_max_age: int, tmp_path: Path
) -> None:
    pg_port, _ = postgres
    name = f"kanal_test_{conn_max_age}"
    fresh_database(pg_port, name)
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "TEST_PG_PORT": str(pg_port),
        "TEST_PG_NAME": name,
        "TEST_CONN_MAX_AGE": str(conn_max_age),
        "KANAL_SYNC_THREADS": str(THREADS),
        "KANAL_LAYER": "memory://",
    }
    port = free_port()
    command = [KANAL, "serve", "project.asgi:application", "--port", str(port)]
    async with example_process(command, env, "kanal server ready") as server:
        async with asyncio.timeout(60):
            seen = await asyncio.gather(
                *(ask(f"ws://127.0.0.1:{port}/ws/db/") for _ in range(CLIENTS))
            )
        assert len(seen) == CLIENTS  # all answered: no "too many clients"
        assert max(seen) <= THREADS  # never more connections than threads
        held = held_connections(server.pid, pg_port)
        if conn_max_age == 0:
            assert held == 0  # each call closed its connection before it answered
        else:
            assert 0 < held <= THREADS  # kept for reuse, one per thread at most
            assert await ask(f"ws://127.0.0.1:{port}/ws/db/") <= THREADS
            assert held_connections(server.pid, pg_port) <= THREADS
