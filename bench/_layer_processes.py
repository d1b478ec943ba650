"""What the layer benchmarks share: the message, the members, and layers in other processes.

``bench.layers_redis`` and ``bench.layers_ipc`` measure their layers with the same
workloads; a suite passes its own ``make(impl, spec)`` (a module-level function, so that a
spawned child can import it) and whatever ``spec`` it needs to build a layer (a URL, a
mapping of URLs). A :class:`Child` runs one of three modes in a process of its own:

* ``send``: ``send_at_rate`` to the channel given, then ``done``;
* ``burst``: ``count`` sends as fast as they are awaited, ``started`` (with the time after
  the first, which opened the connections) and ``done``;
* ``members``: ``count`` members of a group, ``ready``; then, for each order (a number of
  deliveries to wait for), ``armed`` and ``done`` with the time the last arrived, until
  ``stop``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

__all__ = [
    "LATENCY_RATE",
    "LATENCY_SECONDS",
    "TIMEOUT",
    "Child",
    "Members",
    "chat_message",
    "close_layer",
    "percentiles",
    "send_at_rate",
]

LATENCY_RATE = 200  # messages/s
LATENCY_SECONDS = 2.0
TIMEOUT = 120.0

#: ``make(impl, spec)``: the layer a suite measures for ``impl``.
Make = Callable[[str, Any], Any]


def chat_message(seq: int, sent: float = 0.0) -> dict[str, Any]:
    """A chat line with a little metadata, the same for every implementation."""
    return {
        "type": "chat.message",
        "room": "lobby",
        "user": {"id": 4711, "name": "alice"},
        "text": "Hello everyone, the build is green again.",
        "seq": seq,
        "sent": sent,
    }


async def send_at_rate(layer: Any, channel: str) -> None:
    """LATENCY_RATE messages/s for LATENCY_SECONDS, each stamped with its send time."""
    interval = 1.0 / LATENCY_RATE
    start = time.perf_counter()
    for seq in range(int(LATENCY_RATE * LATENCY_SECONDS)):
        delay = start + seq * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await layer.send(channel, chat_message(seq, time.time()))


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 in ms of latencies in seconds (sorted in place)."""
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return p50 * 1e3, p99 * 1e3


async def close_layer(layer: Any) -> None:
    """Flush and close a kanal or channels_redis layer (the latter has close_pools)."""
    await layer.flush()
    close = getattr(layer, "close", None) or getattr(layer, "close_pools", None)
    if close is not None:
        await close()


class Members:
    """``count`` members of ``group``, each a task receiving on its own channel."""

    def __init__(self, layer: Any, group: str, count: int) -> None:
        self.layer = layer
        self.group = group
        self.count = count
        self.remaining = 0
        self.done: asyncio.Event = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        names = [await self.layer.new_channel() for _ in range(self.count)]
        for name in names:
            await self.layer.group_add(self.group, name)
        self.tasks = [asyncio.create_task(self._receive(name)) for name in names]
        await asyncio.sleep(0.2)  # every member (and a pub/sub subscription) is waiting

    def expect(self, deliveries: int) -> None:
        self.remaining = deliveries
        self.done.clear()

    async def _receive(self, name: str) -> None:
        while True:
            await self.layer.receive(name)
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class Child:
    """A process running one mode on ``make(impl, spec)``; orders and answers go over a pipe.

    Started at once; :meth:`close` (or leaving its ``with`` block) tells it to stop.
    """

    def __init__(self, make: Make, impl: str, spec: Any, mode: str, argument: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(
            target=_child_main,
            args=(make, impl, spec, mode, argument, child_conn),
            daemon=True,
        )
        self.process.start()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.send("stop")
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()

    def send(self, value: Any) -> None:
        self.conn.send(value)

    async def expect(self, what: str) -> Any:
        kind, value = await asyncio.wait_for(asyncio.to_thread(self.conn.recv), TIMEOUT)
        if kind == "error":
            raise RuntimeError(f"child process failed: {value}")
        if kind != what:
            raise RuntimeError(f"child process said {kind!r}, expected {what!r}")
        return value


def _child_main(
    make: Make, impl: str, spec: Any, mode: str, argument: Any, conn: Connection
) -> None:
    try:
        asyncio.run(_child(make(impl, spec), mode, argument, conn))
    except Exception as exc:  # told to the parent, which raises it
        conn.send(("error", repr(exc)))


async def _child(layer: Any, mode: str, argument: Any, conn: Connection) -> None:
    try:
        if mode == "send":
            await send_at_rate(layer, argument)
            conn.send(("done", None))
        elif mode == "burst":
            channel, count = argument
            messages = [chat_message(seq) for seq in range(count)]
            await layer.send(channel, messages[0])  # connected before the clock starts
            conn.send(("started", time.time()))
            for each in messages[1:]:
                await layer.send(channel, each)
            conn.send(("done", None))
        elif mode == "members":
            group, count = argument
            members = Members(layer, group, count)
            await members.start()
            conn.send(("ready", None))
            while (order := await asyncio.to_thread(conn.recv)) != "stop":
                members.expect(order)
                conn.send(("armed", None))
                await asyncio.wait_for(members.done.wait(), TIMEOUT)
                conn.send(("done", time.time()))
            await members.stop()
            return
        await asyncio.to_thread(conn.recv)  # "stop"
    finally:
        close = getattr(layer, "close", None) or getattr(layer, "close_pools", None)
        if close is not None:
            await close()
