"""Redis channel layers: kanal's ``RedisChannelLayer`` against both of channels_redis's.

Peers, measured in the same run against the same ``redis-server`` (started by the bench on
a free port, never a shared one): channels_redis ``RedisChannelLayer`` (lists + sorted
sets) and ``RedisPubSubChannelLayer`` (pub/sub). Figures:

* point-to-point: one sender, one receiver in one process, messages/s; and the same with
  20 concurrent senders (a server with many connections sending at once); and one sender
  in another process, each send awaited (so bound by the round trip to Redis);
* one-way latency p50 and p99 at 200 messages/s, in one process and from another process;
* ``group_send`` to 1,000 members living in another process: time until all have it;
* sustained fan-out: 200 ``group_send`` to 100 members, delivered messages/s, with the
  members in the same process and in another process;
* ``async_to_sync(layer.group_send)(...)`` from sync code (a Django view, a Celery task),
  ms per call: asgiref runs each such call on a new event loop of its own.

Capacity is raised to 1,000 for every layer that has one, so that no figure measures
drops. Within a repeat the implementations alternate and the order rotates between
repeats, so slow drifts of this noisy machine hit all alike; figures are medians.

Run ``python -m bench.layers_redis [--repeats N] [--only kanal,...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from bench._common import Figure, emit
from kanal.testing import RedisServer

__all__ = ["run"]

SUITE = "layers.redis"
CAPACITY = 1_000
P2P_MESSAGES = 2_000
# channels_redis's list layer manages a few hundred messages/s: fewer messages keep its
# measurement around two seconds, which is still far above timer noise.
P2P_MESSAGES_SLOW = 600
LATENCY_RATE = 200  # messages/s
LATENCY_SECONDS = 2.0
GROUP_MEMBERS = 1_000
GROUP_ROUNDS = 5
FANOUT_SENDS = 200
FANOUT_MEMBERS = 100
SYNC_CALLS = 200
TIMEOUT = 120.0

IMPLS = ("kanal", "channels_redis", "channels_redis_pubsub")


def _make(impl: str, url: str) -> Any:
    if impl == "kanal":
        from kanal.layers.redis import RedisChannelLayer

        return RedisChannelLayer(hosts=[url], capacity=CAPACITY, prefix="bench")
    if impl == "channels_redis":
        from channels_redis.core import RedisChannelLayer as CoreLayer

        return CoreLayer(hosts=[url], capacity=CAPACITY, prefix="bench")
    if impl == "channels_redis_pubsub":
        from channels_redis.pubsub import RedisPubSubChannelLayer

        return RedisPubSubChannelLayer(hosts=[url], prefix="bench")
    raise ValueError(f"unknown implementation {impl!r}")


async def _close(layer: Any) -> None:
    await layer.flush()
    close = getattr(layer, "close", None) or getattr(layer, "close_pools", None)
    if close is not None:
        await close()


def _message(seq: int, sent: float = 0.0) -> dict[str, Any]:
    """A chat line with a little metadata, the same for every implementation."""
    return {
        "type": "chat.message",
        "room": "lobby",
        "user": {"id": 4711, "name": "alice"},
        "text": "Hello everyone, the build is green again.",
        "seq": seq,
        "sent": sent,
    }


# -- in-process workloads ---------------------------------------------------------------


async def _point_to_point(impl: str, url: str) -> float:
    layer = _make(impl, url)
    try:
        channel = await layer.new_channel()
        count = P2P_MESSAGES_SLOW if impl == "channels_redis" else P2P_MESSAGES
        messages = [_message(seq) for seq in range(count)]

        async def receiver() -> int:
            last = -1
            for _ in range(count):
                last = (await layer.receive(channel))["seq"]
            return last

        task = asyncio.create_task(receiver())
        await asyncio.sleep(0.05)  # the receiver is subscribed and waiting
        start = time.perf_counter()
        for message in messages:
            await layer.send(channel, message)
        last = await asyncio.wait_for(task, TIMEOUT)
        elapsed = time.perf_counter() - start
        if last != count - 1:
            raise RuntimeError(f"{impl} point-to-point: last message was #{last}")
        return count / elapsed
    finally:
        await _close(layer)


async def _point_to_point_concurrent(impl: str, url: str) -> float:
    """20 sender tasks, one receiver, in one process: messages/s (a busy server's case)."""
    layer = _make(impl, url)
    try:
        channel = await layer.new_channel()
        count = P2P_MESSAGES_SLOW if impl == "channels_redis" else P2P_MESSAGES
        senders = 20
        per_sender = count // senders

        async def sender(first: int) -> None:
            for seq in range(first, first + per_sender):
                await layer.send(channel, _message(seq))

        async def receiver() -> None:
            for _ in range(per_sender * senders):
                await layer.receive(channel)

        task = asyncio.create_task(receiver())
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        await asyncio.gather(*(sender(n * per_sender) for n in range(senders)))
        await asyncio.wait_for(task, TIMEOUT)
        return per_sender * senders / (time.perf_counter() - start)
    finally:
        await _close(layer)


async def _point_to_point_remote(impl: str, url: str) -> float:
    """One sender in another process awaiting each send, one receiver here: messages/s."""
    layer = _make(impl, url)
    try:
        channel = await layer.new_channel()
        count = P2P_MESSAGES_SLOW if impl == "channels_redis" else P2P_MESSAGES
        done = asyncio.Event()

        async def receiver() -> None:
            for _ in range(count):
                await layer.receive(channel)
            done.set()

        task = asyncio.create_task(receiver())
        await asyncio.sleep(0.05)
        with _Child(impl, url, "burst", (channel, count)) as child:
            start = await child.expect("started")
            await asyncio.wait_for(done.wait(), TIMEOUT)
            finished = time.time()
            await child.expect("done")
        await task
        return (count - 1) / (finished - start)  # the first send started the clock
    finally:
        await _close(layer)


async def _send_at_rate(layer: Any, channel: str) -> None:
    interval = 1.0 / LATENCY_RATE
    start = time.perf_counter()
    for seq in range(int(LATENCY_RATE * LATENCY_SECONDS)):
        delay = start + seq * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await layer.send(channel, _message(seq, time.time()))


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return p50 * 1e3, p99 * 1e3


async def _latency(impl: str, url: str, cross_process: bool) -> tuple[float, float]:
    """p50 and p99 one-way latency in ms; the sender is another process if asked."""
    layer = _make(impl, url)
    try:
        channel = await layer.new_channel()
        count = int(LATENCY_RATE * LATENCY_SECONDS)
        latencies: list[float] = []

        async def receiver() -> None:
            for _ in range(count):
                message = await layer.receive(channel)
                latencies.append(time.time() - message["sent"])

        task = asyncio.create_task(receiver())
        await asyncio.sleep(0.05)
        if cross_process:
            with _Child(impl, url, "send", channel) as child:
                await child.expect("done")
        else:
            await _send_at_rate(layer, channel)
        await asyncio.wait_for(task, TIMEOUT)
        return _percentiles(latencies)
    finally:
        await _close(layer)


class _Members:
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


async def _fanout_local(impl: str, url: str) -> float:
    """200 group_send to 100 members in this process: delivered messages/s."""
    layer = _make(impl, url)
    members = _Members(layer, "fanout", FANOUT_MEMBERS)
    try:
        await members.start()
        members.expect(FANOUT_SENDS * FANOUT_MEMBERS)
        start = time.perf_counter()
        for seq in range(FANOUT_SENDS):
            await layer.group_send("fanout", _message(seq))
        await asyncio.wait_for(members.done.wait(), TIMEOUT)
        return FANOUT_SENDS * FANOUT_MEMBERS / (time.perf_counter() - start)
    finally:
        await members.stop()
        await _close(layer)


# -- cross-process workloads --------------------------------------------------------------


class _Child:
    """A child process running :func:`_child_main`; messages go both ways on a pipe."""

    def __init__(self, impl: str, url: str, mode: str, argument: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(
            target=_child_main, args=(impl, url, mode, argument, child_conn), daemon=True
        )

    def __enter__(self) -> _Child:
        self.process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.send("stop")
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()

    async def expect(self, what: str) -> Any:
        kind, value = await asyncio.wait_for(asyncio.to_thread(self.conn.recv), TIMEOUT)
        if kind == "error":
            raise RuntimeError(f"child process failed: {value}")
        if kind != what:
            raise RuntimeError(f"child process said {kind!r}, expected {what!r}")
        return value

    def send(self, value: Any) -> None:
        self.conn.send(value)


def _child_main(impl: str, url: str, mode: str, argument: Any, conn: Connection) -> None:
    try:
        asyncio.run(_child(impl, url, mode, argument, conn))
    except Exception as exc:  # report it to the parent, which raises it
        conn.send(("error", repr(exc)))


async def _child(impl: str, url: str, mode: str, argument: Any, conn: Connection) -> None:
    layer = _make(impl, url)
    try:
        if mode == "send":
            await _send_at_rate(layer, argument)
            conn.send(("done", None))
        elif mode == "burst":
            channel, count = argument
            messages = [_message(seq) for seq in range(count)]
            await layer.send(channel, messages[0])  # connections are up before the clock
            conn.send(("started", time.time()))
            for message in messages[1:]:
                await layer.send(channel, message)
            conn.send(("done", None))
        elif mode == "members":
            group, count = argument
            members = _Members(layer, group, count)
            await members.start()
            conn.send(("ready", None))
            while True:
                order = await asyncio.to_thread(conn.recv)
                if order == "stop":
                    break
                members.expect(order)
                conn.send(("armed", None))
                await asyncio.wait_for(members.done.wait(), TIMEOUT)
                conn.send(("done", time.time()))
            await members.stop()
        await asyncio.to_thread(conn.recv)  # "stop"
    finally:
        close = getattr(layer, "close", None) or getattr(layer, "close_pools", None)
        if close is not None:
            await close()


async def _group_remote(impl: str, url: str) -> float:
    """group_send to 1,000 members in another process: ms until the last has it (median)."""
    layer = _make(impl, url)
    times: list[float] = []
    try:
        await layer.flush()
        with _Child(impl, url, "members", ("big", GROUP_MEMBERS)) as child:
            await child.expect("ready")
            for seq in range(GROUP_ROUNDS):
                child.send(GROUP_MEMBERS)
                await child.expect("armed")
                start = time.time()
                await layer.group_send("big", _message(seq))
                finished = await child.expect("done")
                times.append((finished - start) * 1e3)
            child.send("stop")
    finally:
        await _close(layer)
    return statistics.median(times)


async def _fanout_remote(impl: str, url: str) -> float:
    """200 group_send to 100 members in another process: delivered messages/s."""
    layer = _make(impl, url)
    try:
        await layer.flush()
        with _Child(impl, url, "members", ("fanout", FANOUT_MEMBERS)) as child:
            await child.expect("ready")
            child.send(FANOUT_SENDS * FANOUT_MEMBERS)
            await child.expect("armed")
            start = time.time()
            for seq in range(FANOUT_SENDS):
                await layer.group_send("fanout", _message(seq))
            finished = await child.expect("done")
            child.send("stop")
    finally:
        await _close(layer)
    return FANOUT_SENDS * FANOUT_MEMBERS / (finished - start)


def _group_send_from_sync_code(impl: str, url: str) -> float:
    """ms per ``async_to_sync(layer.group_send)(...)`` from a thread with no event loop."""
    from asgiref.sync import async_to_sync

    layer = _make(impl, url)
    if impl == "kanal":
        layer.for_sync()  # what a WSGI or Celery process says once (docs/layers.md)
    try:
        async_to_sync(layer.group_send)("sync-callers", _message(0))  # first use: connect
        start = time.perf_counter()
        for seq in range(SYNC_CALLS):
            async_to_sync(layer.group_send)("sync-callers", _message(seq))
        return (time.perf_counter() - start) / SYNC_CALLS * 1e3
    finally:
        async_to_sync(_close)(layer)


# -- the suite ------------------------------------------------------------------------------


def _figures(impls: tuple[str, ...]) -> dict[tuple[str, str], Figure]:
    specs = [
        ("point-to-point", "msg/s", True),
        ("point-to-point 20 senders", "msg/s", True),
        ("point-to-point cross-process", "msg/s", True),
        ("latency p50 @200/s", "ms", False),
        ("latency p99 @200/s", "ms", False),
        ("latency p50 @200/s cross-process", "ms", False),
        ("latency p99 @200/s cross-process", "ms", False),
        ("group_send 1000 members other process", "ms", False),
        ("fan-out 200x100", "deliv/s", True),
        ("fan-out 200x100 cross-process", "deliv/s", True),
        ("async_to_sync group_send", "ms/call", False),
    ]
    return {
        (name, impl): Figure(SUITE, name, impl, unit, higher_is_better=higher)
        for name, unit, higher in specs
        for impl in impls
    }


def run(repeats: int = 3, impls: tuple[str, ...] = IMPLS) -> list[Figure]:
    """Measure every figure ``repeats`` times for each implementation; return the figures."""
    figures = _figures(impls)
    with RedisServer() as server:
        url = server.url
        for repeat in range(repeats):
            order = impls[repeat % len(impls) :] + impls[: repeat % len(impls)]
            for impl in order:
                _measure(impl, url, figures)
                print(f"  repeat {repeat + 1}/{repeats}: {impl} done", file=sys.stderr)
    return list(figures.values())


def _measure(impl: str, url: str, figures: dict[tuple[str, str], Figure]) -> None:
    def add(name: str, value: float) -> None:
        figures[name, impl].samples.append(value)

    def measure(call: Callable[[], Any]) -> Any:
        return asyncio.run(call())

    add("point-to-point", measure(lambda: _point_to_point(impl, url)))
    add("point-to-point 20 senders", measure(lambda: _point_to_point_concurrent(impl, url)))
    add("point-to-point cross-process", measure(lambda: _point_to_point_remote(impl, url)))
    p50, p99 = measure(lambda: _latency(impl, url, cross_process=False))
    add("latency p50 @200/s", p50)
    add("latency p99 @200/s", p99)
    p50, p99 = measure(lambda: _latency(impl, url, cross_process=True))
    add("latency p50 @200/s cross-process", p50)
    add("latency p99 @200/s cross-process", p99)
    add("group_send 1000 members other process", measure(lambda: _group_remote(impl, url)))
    add("fan-out 200x100", measure(lambda: _fanout_local(impl, url)))
    add("fan-out 200x100 cross-process", measure(lambda: _fanout_remote(impl, url)))
    add("async_to_sync group_send", _group_send_from_sync_code(impl, url))


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m bench.layers_redis [--repeats N] [--only a,b]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(IMPLS), help="comma-separated impls")
    args = parser.parse_args(argv)
    impls = tuple(name for name in args.only.split(",") if name)
    emit(run(args.repeats, impls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
