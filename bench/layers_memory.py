"""In-memory channel layers: kanal's ``InMemoryChannelLayer`` against Django Channels'.

Figures, each measured for both layers in the same run, on the same event loop, with the same
message and the same capacity (raised so that nothing is refused):

* point-to-point: one sender, one receiver, messages/s;
* one-way latency p50 and p99 at a fixed rate (the message carries its send time);
* ``group_send`` to 1, 100 and 1,000 members: time until every member has the message;
* sustained fan-out: ``group_send`` after ``group_send`` to 100 members, each with its own
  receiving task, in delivered messages/s.

Every measurement runs on a fresh event loop and a fresh layer, under asyncio's loop and
uvloop's (the loop is part of the figure's name). The two layers take turns, which goes first
alternating, and the throughput figures are cut into short slices taken in turn, so the load
of a busy machine hits both alike; samples and figures are medians.

Run ``python -m bench.layers_memory [--repeats N] [--loop asyncio|uvloop|both]``;
``--profile`` runs kanal's workloads under cProfile instead and prints the hot spots.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from bench._common import Figure, emit

__all__ = ["LOOPS", "run"]

SUITE = "layers.memory"

# Workload sizes. Large enough that one measurement takes tens of milliseconds or more
# (well above timer and scheduling noise), small enough that a full run with 3 repeats on
# both loops stays around a minute even with the slower peer.
#
# The throughput figures run in slices, the layers taking turns slice by slice; a sample is
# the median of its slices. On a shared machine another process takes the CPU for tens of
# milliseconds at a time: with short alternating slices both layers meet the same load, and
# the median drops the slices it hit.
SLICES = {"p2p": 5, "fanout": 4}
P2P_MESSAGES = 2_000  # per slice
# The sender yields to the loop after this many sends, so the receiver drains as it goes
# (a real producer is one task among many) and queues stay short, as in production.
P2P_BATCH = 50
LATENCY_RATE = 1_000  # messages/s
LATENCY_SECONDS = 2.0
GROUP_SIZES = (1, 100, 1_000)
# group_send rounds per measurement; the measurement's value is their median.
GROUP_ROUNDS = {1: 200, 100: 30, 1_000: 5}
FANOUT_SENDS = 50  # per slice: 200 group_sends in all
FANOUT_MEMBERS = 100
# No measurement takes more than seconds; a wait this long means a lost message.
TIMEOUT = 60.0

LOOPS = ("asyncio", "uvloop")


class Layer(Protocol):
    """The part of the channel-layer API the benchmark uses (kanal's and Channels' share it)."""

    async def send(self, channel: str, message: dict[str, Any]) -> None: ...

    async def receive(self, channel: str) -> dict[str, Any]: ...

    async def group_add(self, group: str, channel: str) -> None: ...

    async def group_send(self, group: str, message: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


LayerFactory = Callable[[int], Layer]  # capacity -> a fresh layer


def _kanal_layer(capacity: int) -> Layer:
    from kanal.layers import InMemoryChannelLayer

    return InMemoryChannelLayer(capacity=capacity)


def _channels_layer(capacity: int) -> Layer:
    from channels.layers import InMemoryChannelLayer

    layer: Layer = InMemoryChannelLayer(capacity=capacity)
    return layer


def _implementations() -> dict[str, LayerFactory]:
    impls: dict[str, LayerFactory] = {"kanal": _kanal_layer}
    try:
        import channels.layers  # noqa: F401
    except ImportError:
        print("channels is not installed: measuring kanal alone", file=sys.stderr)
    else:
        impls["channels"] = _channels_layer
    return impls


def _message(seq: int, sent: float = 0.0) -> dict[str, Any]:
    """The message every figure sends: the shape of a chat line with a little metadata."""
    return {
        "type": "chat.message",
        "room": "lobby",
        "user": {"id": 4711, "name": "alice"},
        "text": "Hello everyone, the build is green again.",
        "seq": seq,
        "sent": sent,
    }


def _member_names(count: int) -> list[str]:
    # Process-specific names, as a server's consumers have; valid for both layers.
    return [f"bench.member!{index:05d}" for index in range(count)]


# -- workloads: each runs on a fresh loop with a fresh layer and returns its figures' values --


async def _point_to_point(layer: Layer) -> float:
    """One sender, one receiver: messages/s from the first send to the last receive."""
    channel = "bench.p2p"
    messages = [_message(seq) for seq in range(P2P_MESSAGES)]

    async def receiver() -> int:
        last = -1
        for _ in range(P2P_MESSAGES):
            last = (await layer.receive(channel))["seq"]
        return last

    task = asyncio.create_task(receiver())
    await asyncio.sleep(0)  # the receiver is waiting before the clock starts
    start = time.perf_counter()
    for seq, message in enumerate(messages):
        await layer.send(channel, message)
        if seq % P2P_BATCH == P2P_BATCH - 1:
            await asyncio.sleep(0)
    last = await asyncio.wait_for(task, TIMEOUT)
    elapsed = time.perf_counter() - start
    if last != P2P_MESSAGES - 1:
        raise RuntimeError(f"point-to-point: last message received was #{last}")
    return P2P_MESSAGES / elapsed


async def _latency(layer: Layer) -> tuple[float, float]:
    """Send at a fixed rate; return the one-way latency's p50 and p99 in microseconds."""
    channel = "bench.latency"
    count = int(LATENCY_RATE * LATENCY_SECONDS)
    latencies: list[float] = []

    async def receiver() -> None:
        for _ in range(count):
            message = await layer.receive(channel)
            latencies.append(time.perf_counter() - message["sent"])

    task = asyncio.create_task(receiver())
    await asyncio.sleep(0)
    interval = 1.0 / LATENCY_RATE
    start = time.perf_counter()
    for seq in range(count):
        delay = start + seq * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await layer.send(channel, _message(seq, time.perf_counter()))
    await asyncio.wait_for(task, TIMEOUT)
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return p50 * 1e6, p99 * 1e6


class _Members:
    """``count`` group members, each with its own task receiving on its own channel."""

    def __init__(self, layer: Layer, group: str, count: int) -> None:
        self.layer = layer
        self.group = group
        self.names = _member_names(count)
        self.remaining = 0
        self.done: asyncio.Future[float] | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for name in self.names:
            await self.layer.group_add(self.group, name)
        self.tasks = [asyncio.create_task(self._receive(name)) for name in self.names]
        await asyncio.sleep(0)  # every member is now waiting in receive

    def expect(self, deliveries: int) -> asyncio.Future[float]:
        """A future set to the time the next ``deliveries`` messages have all arrived."""
        self.remaining = deliveries
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    async def _receive(self, name: str) -> None:
        receive = self.layer.receive
        while True:
            await receive(name)
            self.remaining -= 1
            if self.remaining == 0 and self.done is not None:
                self.done.set_result(time.perf_counter())

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _no_drops(layer: Layer) -> None:
    """Fail at once, rather than at the timeout, if a layer that counts drops dropped any."""
    stats = getattr(layer, "stats", None)
    dropped = stats().dropped if callable(stats) else 0
    if dropped:
        raise RuntimeError(f"{type(layer).__module__} dropped {dropped} messages: capacity")


async def _group_send_time(layer: Layer, members: int) -> float:
    """Median time (microseconds) from ``group_send`` until every member has the message."""
    crowd = _Members(layer, "bench.room", members)
    await crowd.start()
    times = []
    try:
        for seq in range(GROUP_ROUNDS[members]):
            done = crowd.expect(members)
            start = time.perf_counter()
            await layer.group_send("bench.room", _message(seq))
            end = await asyncio.wait_for(done, TIMEOUT)
            times.append(end - start)
    finally:
        await crowd.stop()
    return statistics.median(times) * 1e6


async def _fanout(layer: Layer) -> float:
    """``group_send`` after ``group_send`` to 100 busy members: delivered messages/s."""
    crowd = _Members(layer, "bench.fanout", FANOUT_MEMBERS)
    await crowd.start()
    messages = [_message(seq) for seq in range(FANOUT_SENDS)]
    try:
        done = crowd.expect(FANOUT_SENDS * FANOUT_MEMBERS)
        start = time.perf_counter()
        for message in messages:
            await layer.group_send("bench.fanout", message)
            await asyncio.sleep(0)  # the producer is one task among many
        _no_drops(layer)
        end = await asyncio.wait_for(done, TIMEOUT)
    finally:
        await crowd.stop()
    return FANOUT_SENDS * FANOUT_MEMBERS / (end - start)


# -- running -------------------------------------------------------------------------------


def _run_on(loop_name: str, main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` on a fresh loop of the named kind, with a clean heap."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop_name == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    gc.collect()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


async def _with_layer(
    factory: LayerFactory, capacity: int, work: Callable[[Layer], Coroutine[Any, Any, Any]]
) -> Any:
    layer = factory(capacity)
    try:
        return await work(layer)
    finally:
        await layer.close()


Workload = Callable[[Layer], Coroutine[Any, Any, Any]]


def _workloads() -> list[tuple[str, int, Workload]]:
    """(key, capacity, workload). Capacities are the largest backlog each can build up."""
    items: list[tuple[str, int, Workload]] = [
        ("p2p", P2P_MESSAGES, _point_to_point),
        ("latency", LATENCY_RATE * int(LATENCY_SECONDS + 1), _latency),
    ]
    for size in GROUP_SIZES:

        async def group(layer: Layer, size: int = size) -> float:
            return await _group_send_time(layer, size)

        items.append((f"group{size}", 100, group))
    items.append(("fanout", FANOUT_SENDS, _fanout))
    return items


def _available_loops(wanted: tuple[str, ...]) -> tuple[str, ...]:
    loops = []
    for name in wanted:
        if name == "uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                print("uvloop is not installed: skipping it", file=sys.stderr)
                continue
        loops.append(name)
    return tuple(loops)


def run(repeats: int = 3, *, loops: tuple[str, ...] = LOOPS) -> list[Figure]:
    """Measure every figure ``repeats`` times for kanal and Channels on each loop."""
    impls = _implementations()
    figures: dict[tuple[str, str], Figure] = {}

    def record(name: str, impl: str, unit: str, value: float, higher: bool = True) -> None:
        figure = figures.get((name, impl))
        if figure is None:
            figure = figures[name, impl] = Figure(SUITE, name, impl, unit, [], higher)
        figure.samples.append(value)

    for loop_name in _available_loops(loops):
        for repeat in range(repeats):
            for key, capacity, work in _workloads():
                slices: dict[str, list[Any]] = {impl: [] for impl in impls}
                for turn in range(SLICES.get(key, 1)):
                    order = list(impls.items())
                    if (repeat + turn) % 2:
                        order.reverse()
                    for impl, factory in order:
                        slices[impl].append(
                            _run_on(loop_name, _with_layer(factory, capacity, work))
                        )
                for impl, values in slices.items():
                    value = _median_of(values)
                    tag = f"[{loop_name}]"
                    if key == "p2p":
                        record(f"point-to-point {tag}", impl, "msg/s", value)
                    elif key == "latency":
                        p50, p99 = value
                        rate = f"@{LATENCY_RATE}/s"
                        record(f"latency p50 {rate} {tag}", impl, "us", p50, higher=False)
                        record(f"latency p99 {rate} {tag}", impl, "us", p99, higher=False)
                    elif key.startswith("group"):
                        size = int(key.removeprefix("group"))
                        record(f"group_send to {size} {tag}", impl, "us", value, higher=False)
                    else:
                        sends = FANOUT_SENDS * SLICES["fanout"]
                        what = f"fan-out {sends}x{FANOUT_MEMBERS}"
                        record(f"{what} {tag}", impl, "dlv/s", value)
    return list(figures.values())


def _median_of(values: list[Any]) -> Any:
    """The median of numbers, or of tuples of numbers position by position."""
    if isinstance(values[0], tuple):
        return tuple(statistics.median(column) for column in zip(*values, strict=True))
    return statistics.median(values)


def profile(loop_name: str = "asyncio", top: int = 25) -> None:
    """Run kanal's workloads under cProfile and print the functions that cost the most."""
    for key, capacity, work in _workloads():
        if key == "latency":
            continue  # mostly idle by design: it waits for the send schedule
        profiler = cProfile.Profile()
        main = _with_layer(_kanal_layer, capacity, work)
        profiler.enable()
        _run_on(loop_name, main)
        profiler.disable()
        print(f"\n=== kanal {key} [{loop_name}] ===")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m bench.layers_memory [--repeats N] [--loop L] [--profile]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.layers_memory", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure")
    parser.add_argument(
        "--loop", choices=[*LOOPS, "both"], default="both", help="event loop(s) to run on"
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile kanal's workloads instead of comparing"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    loops = LOOPS if args.loop == "both" else (args.loop,)
    if args.profile:
        for loop_name in loops:
            profile(loop_name)
        return 0
    emit(run(args.repeats, loops=loops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
