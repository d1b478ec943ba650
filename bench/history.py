"""Group history on Redis: what a publish with history costs, and how fast 1,000 clients
recover after a server restart.

Figures, in one run against one ``redis-server`` started by the bench on a free port:

* publish rate, ``group_send`` to a group with history (one Lua script: XADD to the
  group's stream, capped, plus the fan-out) against a plain ``group_send`` (the fan-out
  alone), one publish at a time (each awaited: bound by the round trip) and 64 at once
  (batched into shared round trips); one member, drained in the same process; and Redis's
  own time per publish script (``INFO commandstats``), which the machine's noise hardly
  moves;
* recovery: 1,000 WebSocket clients of ``kanal serve`` (``bench._history_app``: direct
  delivery, the room's history 200 messages / 300 s) are connected; the server is stopped
  (SIGTERM), 100 broadcasts are sent to the room meanwhile, the server is started again and
  every client reconnects at once with ``?since=`` its last position. Measured from the
  first reconnect to the last client that has all 100, each exactly once and in order
  (checked); with the per-client p50 and p99. Its peer: the same 1,000 reconnecting
  without ``since`` (no catch-up), until each is subscribed again.

The clients are ``bench._wsclient``'s cheap sans-I/O connections, in this process; the
server, Redis and the clients share the machine's cores, so the recovery time includes
theirs. Figures are medians of the repeats.

Run ``python -m bench history [--repeats N]`` or ``python -m bench.history``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import redis.asyncio as redis_client

from bench._common import Figure, emit
from bench._wsclient import HANDSHAKE_TIMEOUT, Connection, raise_fd_limit
from bench.server import ROOT, ServerFailed, _stop, _wait_ready, free_port
from kanal.layers import Position, direct_message
from kanal.layers.redis import RedisChannelLayer
from kanal.testing import RedisServer

__all__ = ["run"]

SUITE = "history.redis"
GROUP = "bench.room"  # bench._history_app's room
HISTORY = {"bench.*": {"size": 200, "ttl": 300}}
HISTORY_URL = "history=bench.*:200:300"
PUBLISHES = 4_000
CONCURRENCY = 64
CLIENTS = 1_000
MISSED = 100
LINE = json.dumps({"kind": "message", "name": "bench", "text": "x" * 100})
TIMEOUT = 120.0


# -- publish cost -----------------------------------------------------------------------------


async def _redis_usec_per_script(url: str, reset: bool) -> float:
    """Redis's own time per script call (``INFO commandstats``, evalsha) since the reset.

    What a publish costs the Redis server, which the machine's noise hardly moves: the
    rate figures include this process and the round trips, on shared cores.
    """
    client = redis_client.Redis.from_url(url)
    try:
        if reset:
            await client.config_resetstat()
            return 0.0
        stats = await client.info("commandstats")
        return float(stats.get("cmdstat_evalsha", {}).get("usec_per_call", float("nan")))
    finally:
        await client.aclose()


async def _publish_rate(url: str, history: bool, concurrency: int) -> float:
    """Publishes/s of ``concurrency`` publishers sending PUBLISHES in all, each awaited."""
    layer = RedisChannelLayer(
        hosts=[url],
        prefix="bench-history",
        history=HISTORY if history else None,
        capacity=PUBLISHES + 1,
    )
    try:
        await layer.flush()
        member = await layer.new_channel()
        await layer.group_add(GROUP, member)
        message = {"type": "chat.message", "text": LINE}
        share = PUBLISHES // concurrency

        async def drain() -> None:
            for _ in range(share * concurrency):
                await layer.receive(member)

        async def publisher(count: int) -> None:
            for _ in range(count):
                await layer.group_send(GROUP, message)

        draining = asyncio.create_task(drain())
        await _redis_usec_per_script(url, reset=True)
        started = time.perf_counter()
        await asyncio.gather(*(publisher(share) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        async with asyncio.timeout(TIMEOUT):
            await draining
        assert layer.stats().dropped == 0, "the member dropped messages"
        return share * concurrency / elapsed
    finally:
        await layer.flush()
        await layer.close()


# -- recovery after a restart -----------------------------------------------------------------


@contextlib.contextmanager
def _serving(port: int, layer_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """``kanal serve bench._history_app:application`` on ``port``, until the block ends."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        KANAL_LAYER=layer_url,
    )
    command = [
        sys.executable, "-c", "import sys; from kanal.cli import main; sys.exit(main())",
        "serve", "bench._history_app:application", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            if not _wait_ready(port, proc):
                output.seek(0)
                tail = output.read().decode(errors="replace")[-2000:]
                raise ServerFailed(f"kanal serve did not start:\n{tail}")
            yield proc
        finally:
            _stop(proc)


class _Client:
    """One reconnecting client: its last position, and what it got since."""

    def __init__(self) -> None:
        self.position: Position | None = None
        self.offsets: list[int] = []
        self.conn: Connection | None = None
        self.done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.expected = 0

    def on_message(self, conn: Connection, data: bytes) -> None:
        event = json.loads(data)
        if "welcome" in event:
            welcome = Position.parse(event["welcome"])
            if self.position is None or welcome.offset > self.position.offset:
                self.position = welcome
        elif "p" in event:
            position = Position.parse(event["p"])
            self.offsets.append(position.offset)
            self.position = position
        elif "gap" in event and not self.done.done():
            self.done.set_exception(AssertionError(f"history gap: {event}"))
        recovered = len(self.offsets) >= self.expected and self.position is not None
        if recovered and not self.done.done():
            self.done.set_result(time.perf_counter())

    async def connect(self, port: int, since: Position | None, expected: int) -> None:
        self.offsets = []
        self.expected = expected
        self.done = asyncio.get_running_loop().create_future()
        query = f"?since={since}" if since is not None else ""
        uri = f"ws://127.0.0.1:{port}/{query}"
        loop = asyncio.get_running_loop()

        def made() -> Connection:
            conn = Connection(uri, False)
            # Before any byte arrives: the first message may come with the handshake.
            conn.on_message = self.on_message
            return conn

        for attempt in range(20):
            try:
                _, conn = await loop.create_connection(made, "127.0.0.1", port)
                await asyncio.wait_for(conn.opened, HANDSHAKE_TIMEOUT)
                break
            except OSError:
                if attempt == 19:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))  # a full listen backlog: retry
        self.conn = conn


async def _recovery(url: str, catch_up: bool) -> tuple[float, float, float]:
    """(seconds until the last client recovered, per-client p50 ms, p99 ms)."""
    raise_fd_limit()
    layer_url = f"{url}?{HISTORY_URL}"
    publisher = RedisChannelLayer.from_url(layer_url)
    await publisher.flush()
    port = free_port()
    clients = [_Client() for _ in range(CLIENTS)]
    try:
        with _serving(port, layer_url) as first:
            gate = asyncio.Semaphore(100)

            async def join(client: _Client) -> None:
                async with gate:
                    await client.connect(port, None, 0)
                await client.done

            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(*(join(client) for client in clients))
            # The restart: the server goes away under every client.
            await asyncio.to_thread(_stop, first)
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(*(c.conn.closed for c in clients if c.conn is not None))
        for n in range(MISSED):
            text = json.dumps({"n": n, "line": LINE})
            await publisher.group_send(GROUP, direct_message(GROUP, text=text, position_field="p"))
        with _serving(port, layer_url):
            started = time.perf_counter()
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(
                    *(
                        client.connect(
                            port, client.position if catch_up else None, MISSED if catch_up else 0
                        )
                        for client in clients
                    )
                )
                finished = await asyncio.gather(*(client.done for client in clients))
            total = max(finished) - started
            if catch_up:
                for client in clients:
                    first_offset = client.offsets[0] if client.offsets else -1
                    assert client.offsets == list(range(first_offset, first_offset + MISSED)), (
                        "a client missed or repeated a message"
                    )
            for client in clients:
                if client.conn is not None and client.conn.transport is not None:
                    client.conn.transport.close()
        per_client = sorted((end - started) * 1000 for end in finished)
        p99 = per_client[min(len(per_client) - 1, int(len(per_client) * 0.99))]
        return total, statistics.median(per_client), p99
    finally:
        await publisher.flush()
        await publisher.close()


# -- the suite ------------------------------------------------------------------------------


def run(repeats: int = 3) -> list[Figure]:
    """Measure every figure ``repeats`` times; return them."""
    with_history, plain = "kanal", "kanal (no history)"
    catch_up, reconnect = "kanal", "reconnect only"
    figures = {
        key: Figure(SUITE, key[0], key[1], unit, higher_is_better=higher)
        for key, unit, higher in [
            (("Redis time per publish", with_history), "us", False),
            (("Redis time per publish", plain), "us", False),
            (("publish, 1 at a time", with_history), "pub/s", True),
            (("publish, 1 at a time", plain), "pub/s", True),
            ((f"publish, {CONCURRENCY} at once", with_history), "pub/s", True),
            ((f"publish, {CONCURRENCY} at once", plain), "pub/s", True),
            ((f"recovery of {CLIENTS} x {MISSED} missed", catch_up), "s", False),
            ((f"recovery of {CLIENTS} x {MISSED} missed", reconnect), "s", False),
            (("recovery per client p50", catch_up), "ms", False),
            (("recovery per client p50", reconnect), "ms", False),
            (("recovery per client p99", catch_up), "ms", False),
            (("recovery per client p99", reconnect), "ms", False),
        ]
    }
    with RedisServer() as server:
        for repeat in range(repeats):
            for impl, history in ((with_history, True), (plain, False)):
                rate = asyncio.run(_publish_rate(server.url, history, 1))
                figures["publish, 1 at a time", impl].samples.append(rate)
                rate = asyncio.run(_publish_rate(server.url, history, CONCURRENCY))
                figures[f"publish, {CONCURRENCY} at once", impl].samples.append(rate)
                usec = asyncio.run(_redis_usec_per_script(server.url, reset=False))
                figures["Redis time per publish", impl].samples.append(usec)
            for impl, recovering in ((catch_up, True), (reconnect, False)):
                total, p50, p99 = asyncio.run(_recovery(server.url, recovering))
                figures[f"recovery of {CLIENTS} x {MISSED} missed", impl].samples.append(total)
                figures["recovery per client p50", impl].samples.append(p50)
                figures["recovery per client p99", impl].samples.append(p99)
            print(f"  repeat {repeat + 1}/{repeats} done", file=sys.stderr)
    return list(figures.values())


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m bench.history [--repeats N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    emit(run(args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
