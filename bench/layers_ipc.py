"""The ``ipc://`` layer against the Redis layers, across processes of one host.

``kanal`` here is kanal's ``ipc://`` layer. Peers, measured in the same run: kanal's Redis
layer (``kanal-redis``) and channels_redis's ``RedisChannelLayer`` (``channels_redis``), on
a ``redis-server`` the bench starts on a free port; and ``memory://`` for a process's own
channels (the figures where ``ipc://`` must cost what ``memory://`` does). Figures:

* cross-process latency p50 and p99: a sender in another process at 200 messages/s;
* cross-process point-to-point: a sender in another process awaiting each send, the
  receiver here, messages/s;
* ``group_send`` to 1,000 members spread over 4 other processes: ms until all have it;
* sustained fan-out: 200 ``group_send`` to 100 members spread over 4 other processes,
  delivered messages/s;
* own channels (sender and receiver in this process): point-to-point and fan-out 200x100,
  against ``memory://``.

Targets against the Redis layer in the same run: p50 at most 1/5, cross-process
point-to-point at least 5x, fan-out at least 1.5x; the ratios printed are ``kanal x``.
Implementations alternate within a repeat and the order rotates; figures are medians.

Run ``python -m bench.layers_ipc [--repeats N] [--only kanal,...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
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
)
from kanal.testing import RedisServer

__all__ = ["run"]

SUITE = "layers.ipc"
# Above any backlog a figure builds (a sender in another process may run ahead of the
# receiver by thousands of messages): no figure measures drops.
CAPACITY = 10_000
P2P_MESSAGES = 5_000
P2P_MESSAGES_SLOW = 600  # channels_redis manages a few hundred a second
PROCESSES = 4
GROUP_MEMBERS = 1_000
GROUP_ROUNDS = 5
FANOUT_SENDS = 200
FANOUT_MEMBERS = 100

CROSS = ("kanal", "kanal-redis", "channels_redis")
OWN = ("kanal", "memory")
IMPLS = ("kanal", "kanal-redis", "channels_redis", "memory")


def _make(impl: str, urls: dict[str, str]) -> Any:
    if impl == "kanal":
        from kanal.layers import layer_from_url

        return layer_from_url(urls["ipc"], capacity=CAPACITY)
    if impl == "memory":
        from kanal.layers import InMemoryChannelLayer

        return InMemoryChannelLayer(capacity=CAPACITY)
    if impl == "kanal-redis":
        from kanal.layers.redis import RedisChannelLayer

        return RedisChannelLayer(hosts=[urls["redis"]], capacity=CAPACITY, prefix="bench")
    if impl == "channels_redis":
        from channels_redis.core import RedisChannelLayer as CoreLayer

        return CoreLayer(hosts=[urls["redis"]], capacity=CAPACITY, prefix="bench")
    raise ValueError(f"unknown implementation {impl!r}")


# -- other processes ------------------------------------------------------------------------


async def _members_elsewhere(
    impl: str, urls: dict[str, str], group: str, total: int
) -> list[Child]:
    children = [
        Child(_make, impl, urls, "members", (group, total // PROCESSES)) for _ in range(PROCESSES)
    ]
    for each in children:
        await each.expect("ready")
    return children


async def _round(children: list[Child], per_child: int) -> None:
    for each in children:
        each.send(per_child)
    for each in children:
        await each.expect("armed")


async def _all_done(children: list[Child]) -> float:
    return max([await each.expect("done") for each in children])


def _stop(children: list[Child]) -> None:
    for each in children:
        each.close()


# -- cross-process workloads ------------------------------------------------------------------


async def _latency(impl: str, urls: dict[str, str]) -> tuple[float, float]:
    """p50 and p99 one-way latency in ms, the sender in another process at 200/s."""
    layer = _make(impl, urls)
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
        child = Child(_make, impl, urls, "send", channel)
        try:
            await child.expect("done")
        finally:
            child.close()
        await asyncio.wait_for(task, TIMEOUT)
        return percentiles(latencies)
    finally:
        await close_layer(layer)


async def _point_to_point_remote(impl: str, urls: dict[str, str]) -> float:
    """A sender in another process awaiting each send, the receiver here: messages/s."""
    layer = _make(impl, urls)
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
        child = Child(_make, impl, urls, "burst", (channel, count))
        try:
            start = await child.expect("started")
            await asyncio.wait_for(done.wait(), TIMEOUT)
            finished = time.time()
            await child.expect("done")
        finally:
            child.close()
        await task
        return (count - 1) / (finished - start)
    finally:
        await close_layer(layer)


async def _group_over_processes(impl: str, urls: dict[str, str]) -> float:
    """group_send to 1,000 members over 4 processes: ms until the last has it (median)."""
    layer = _make(impl, urls)
    times: list[float] = []
    try:
        await layer.flush()
        children = await _members_elsewhere(impl, urls, "big", GROUP_MEMBERS)
        try:
            for seq in range(GROUP_ROUNDS):
                await _round(children, GROUP_MEMBERS // PROCESSES)
                start = time.time()
                await layer.group_send("big", chat_message(seq))
                times.append((await _all_done(children) - start) * 1e3)
        finally:
            _stop(children)
    finally:
        await close_layer(layer)
    return statistics.median(times)


async def _fanout_over_processes(impl: str, urls: dict[str, str]) -> float:
    """200 group_send to 100 members over 4 processes: delivered messages/s."""
    layer = _make(impl, urls)
    try:
        await layer.flush()
        children = await _members_elsewhere(impl, urls, "fanout", FANOUT_MEMBERS)
        try:
            await _round(children, FANOUT_SENDS * FANOUT_MEMBERS // PROCESSES)
            start = time.time()
            for seq in range(FANOUT_SENDS):
                await layer.group_send("fanout", chat_message(seq))
            finished = await _all_done(children)
        finally:
            _stop(children)
    finally:
        await close_layer(layer)
    return FANOUT_SENDS * FANOUT_MEMBERS / (finished - start)


# -- a process's own channels -----------------------------------------------------------------


async def _point_to_point_own(impl: str, urls: dict[str, str]) -> float:
    layer = _make(impl, urls)
    try:
        channel = await layer.new_channel()
        messages = [chat_message(seq) for seq in range(P2P_MESSAGES)]

        async def receiver() -> None:
            for _ in range(P2P_MESSAGES):
                await layer.receive(channel)

        task = asyncio.create_task(receiver())
        await asyncio.sleep(0)
        start = time.perf_counter()
        for message in messages:
            await layer.send(channel, message)
        await asyncio.wait_for(task, TIMEOUT)
        return P2P_MESSAGES / (time.perf_counter() - start)
    finally:
        await close_layer(layer)


async def _fanout_own(impl: str, urls: dict[str, str]) -> float:
    layer = _make(impl, urls)
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


# -- the suite ----------------------------------------------------------------------------------

_SPECS: list[tuple[str, str, bool, tuple[str, ...]]] = [
    ("latency p50 @200/s cross-process", "ms", False, CROSS),
    ("latency p99 @200/s cross-process", "ms", False, CROSS),
    ("point-to-point cross-process", "msg/s", True, CROSS),
    ("group_send 1000 members over 4 processes", "ms", False, CROSS),
    ("fan-out 200x100 over 4 processes", "deliv/s", True, CROSS),
    ("own channel point-to-point", "msg/s", True, OWN),
    ("own channels fan-out 200x100", "deliv/s", True, OWN),
]


def run(repeats: int = 3, impls: tuple[str, ...] = IMPLS) -> list[Figure]:
    """Measure every figure ``repeats`` times for each implementation; return the figures."""
    figures = {
        (name, impl): Figure(SUITE, name, impl, unit, higher_is_better=higher)
        for name, unit, higher, who in _SPECS
        for impl in who
        if impl in impls
    }
    directory = Path(tempfile.mkdtemp(prefix="kb"))
    try:
        with RedisServer() as server:
            urls = {"ipc": f"ipc://{directory / 'layer'}", "redis": server.url}
            for repeat in range(repeats):
                order = impls[repeat % len(impls) :] + impls[: repeat % len(impls)]
                for impl in order:
                    _measure(impl, urls, figures)
                    print(f"  repeat {repeat + 1}/{repeats}: {impl} done", file=sys.stderr)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return list(figures.values())


def _measure(impl: str, urls: dict[str, str], figures: dict[tuple[str, str], Figure]) -> None:
    def add(name: str, value: float) -> None:
        figures[name, impl].samples.append(value)

    def measure(call: Callable[[], Any]) -> Any:
        return asyncio.run(call())

    if impl in CROSS:
        p50, p99 = measure(lambda: _latency(impl, urls))
        add("latency p50 @200/s cross-process", p50)
        add("latency p99 @200/s cross-process", p99)
        add("point-to-point cross-process", measure(lambda: _point_to_point_remote(impl, urls)))
        add(
            "group_send 1000 members over 4 processes",
            measure(lambda: _group_over_processes(impl, urls)),
        )
        add(
            "fan-out 200x100 over 4 processes",
            measure(lambda: _fanout_over_processes(impl, urls)),
        )
    if impl in OWN:
        add("own channel point-to-point", measure(lambda: _point_to_point_own(impl, urls)))
        add("own channels fan-out 200x100", measure(lambda: _fanout_own(impl, urls)))


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m bench.layers_ipc [--repeats N] [--only a,b]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(IMPLS), help="comma-separated impls")
    args = parser.parse_args(argv)
    impls = tuple(name for name in args.only.split(",") if name)
    emit(run(args.repeats, impls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
