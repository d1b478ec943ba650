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
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench._common import Figure, emit
from bench._layer_processes import (
    LATENCY_RATE,
    LATENCY_SECONDS,
    TIMEOUT,
    Child,
    Members,
    chat_message,
    close_layer,
    percentiles,
    send_at_rate,
)
from kanal.testing import RedisServer

__all__ = ["run"]

SUITE = "layers.redis"
CAPACITY = 1_000
P2P_MESSAGES = 2_000
# channels_redis's list layer manages a few hundred messages/s: fewer messages keep its
# measurement around two seconds, which is still far above timer noise.
P2P_MESSAGES_SLOW = 600
GROUP_MEMBERS = 1_000
GROUP_ROUNDS = 5
FANOUT_SENDS = 200
FANOUT_MEMBERS = 100
SYNC_CALLS = 200

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


# -- in-process workloads ---------------------------------------------------------------


async def _point_to_point(impl: str, url: str) -> float:
    layer = _make(impl, url)
    try:
        channel = await layer.new_channel()
        count = P2P_MESSAGES_SLOW if impl == "channels_redis" else P2P_MESSAGES
        messages = [chat_message(seq) for seq in range(count)]

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
        await close_layer(layer)


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
                await layer.send(channel, chat_message(seq))

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
        await close_layer(layer)


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
        with Child(_make, impl, url, "burst", (channel, count)) as child:
            start = await child.expect("started")
            await asyncio.wait_for(done.wait(), TIMEOUT)
            finished = time.time()
            await child.expect("done")
        await task
        return (count - 1) / (finished - start)  # the first send started the clock
    finally:
        await close_layer(layer)


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
            with Child(_make, impl, url, "send", channel) as child:
                await child.expect("done")
        else:
            await send_at_rate(layer, channel)
        await asyncio.wait_for(task, TIMEOUT)
        return percentiles(latencies)
    finally:
        await close_layer(layer)


async def _fanout_local(impl: str, url: str) -> float:
    """200 group_send to 100 members in this process: delivered messages/s."""
    layer = _make(impl, url)
    members = Members(layer, "fanout", FANOUT_MEMBERS)
    try:
        await members.start()
        members.expect(FANOUT_SENDS * FANOUT_MEMBERS)
        start = time.perf_counter()
        for seq in range(FANOUT_SENDS):
            await layer.group_send("fanout", chat_message(seq))
        await asyncio.wait_for(members.done.wait(), TIMEOUT)
        return FANOUT_SENDS * FANOUT_MEMBERS / (time.perf_counter() - start)
    finally:
        await members.stop()
        await close_layer(layer)


# -- cross-process workloads --------------------------------------------------------------


async def _group_remote(impl: str, url: str) -> float:
    """group_send to 1,000 members in another process: ms until the last has it (median)."""
    layer = _make(impl, url)
    times: list[float] = []
    try:
        await layer.flush()
        with Child(_make, impl, url, "members", ("big", GROUP_MEMBERS)) as child:
            await child.expect("ready")
            for seq in range(GROUP_ROUNDS):
                child.send(GROUP_MEMBERS)
                await child.expect("armed")
                start = time.time()
                await layer.group_send("big", chat_message(seq))
                finished = await child.expect("done")
                times.append((finished - start) * 1e3)
    finally:
        await close_layer(layer)
    return statistics.median(times)


async def _fanout_remote(impl: str, url: str) -> float:
    """200 group_send to 100 members in another process: delivered messages/s."""
    layer = _make(impl, url)
    try:
        await layer.flush()
        with Child(_make, impl, url, "members", ("fanout", FANOUT_MEMBERS)) as child:
            await child.expect("ready")
            child.send(FANOUT_SENDS * FANOUT_MEMBERS)
            await child.expect("armed")
            start = time.time()
            for seq in range(FANOUT_SENDS):
                await layer.group_send("fanout", chat_message(seq))
            finished = await child.expect("done")
    finally:
        await close_layer(layer)
    return FANOUT_SENDS * FANOUT_MEMBERS / (finished - start)


def _group_send_from_sync_code(impl: str, url: str) -> float:
    """ms per ``async_to_sync(layer.group_send)(...)`` from a thread with no event loop."""
    from asgiref.sync import async_to_sync

    layer = _make(impl, url)
    if impl == "kanal":
        layer.for_sync()  # what a WSGI or Celery process says once (docs/layers.md)
    try:
        async_to_sync(layer.group_send)("sync-callers", chat_message(0))  # first use: connect
        start = time.perf_counter()
        for seq in range(SYNC_CALLS):
            async_to_sync(layer.group_send)("sync-callers", chat_message(seq))
        return (time.perf_counter() - start) / SYNC_CALLS * 1e3
    finally:
        async_to_sync(close_layer)(layer)


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
