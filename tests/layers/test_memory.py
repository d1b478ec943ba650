"""What is particular to the in-memory layer, beyond the conformance suite."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kanal.exceptions import ChannelFull
from kanal.layers import InMemoryChannelLayer
from kanal.layers._stats import DropLog, StatsBook
from kanal.testing import ManualClock


async def test_expired_state_is_freed_without_being_touched() -> None:
    """Channels and memberships nobody touches again are freed by the timed sweep."""
    clock = ManualClock()
    layer = InMemoryChannelLayer(expiry=0.05, group_expiry=0.05, clock=clock)
    channels = [await layer.new_channel() for _ in range(50)]
    for name in channels:
        await layer.send(name, {"type": "forgotten"})
        await layer.group_add("room", name)
    assert len(layer._channels) == 50
    assert len(layer._groups["room"]) == 50
    assert layer._timer is not None  # the sweep is scheduled, no polling needed
    layer._sweep()  # what the timer runs; called here so the test needs no 1 s wait
    assert len(layer._channels) == 50  # nothing is due yet
    clock.advance(0.06)  # the deadlines pass
    layer._sweep()
    assert not layer._channels and not layer._groups
    assert layer.stats().expired == 50
    assert not layer._channel_heap and not layer._group_heap
    await layer.close()


async def test_pending_in_stats() -> None:
    layer = InMemoryChannelLayer()
    await layer.send("queue", {"type": "a"})
    await layer.send("queue", {"type": "b"})
    assert layer.stats().channels["queue"].pending == 2
    await layer.receive("queue")
    assert layer.stats().channels["queue"].pending == 1
    await layer.close()


def test_one_instance_serves_two_event_loops() -> None:
    """A layer used by a server's loop also serves a thread running its own loop.

    Channels' in-memory layer fails here ("attached to a different loop"); kanal forwards
    the call to the loop the layer's state lives on.
    """
    layer = InMemoryChannelLayer()
    got: list[dict[str, object]] = []

    async def main() -> None:
        channel = await layer.new_channel()
        waiting = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(0)

        def other_thread() -> None:
            async def send_from_other_loop() -> None:
                await layer.send(channel, {"type": "from-other-loop"})
                await layer.group_add("room", channel)
                await layer.group_send("room", {"type": "group-from-other-loop"})

            asyncio.run(send_from_other_loop())

        thread = threading.Thread(target=other_thread)
        thread.start()
        async with asyncio.timeout(5):
            got.append(await waiting)
            got.append(await layer.receive(channel))
        await asyncio.to_thread(thread.join, 5)
        await layer.close()

    asyncio.run(main())
    assert [message["type"] for message in got] == ["from-other-loop", "group-from-other-loop"]


def test_layer_outlives_its_first_loop() -> None:
    """Messages survive the loop that sent them (as with two asyncio.run calls in a test)."""
    layer = InMemoryChannelLayer()

    async def send() -> None:
        await layer.send("queue", {"type": "kept"})

    async def receive() -> dict[str, object]:
        return await layer.receive("queue")

    asyncio.run(send())
    assert asyncio.run(receive()) == {"type": "kept"}


class Catch(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.second = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if len(self.records) >= 2:
            self.second.set()


@pytest.fixture
def catch() -> Iterator[Catch]:
    handler = Catch()
    log = logging.getLogger("test.drops")
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)


async def test_drop_log_is_rate_limited_but_never_silent(catch: Catch) -> None:
    records = catch.records
    drops = DropLog(interval=0.2, log=logging.getLogger("test.drops"))
    for i in range(100):
        drops.dropped("room", f"specific.x!{i}", 10)
    assert len(records) == 1
    assert "specific.x!0" in records[0].getMessage()
    # The held-back drops are summarised when the interval ends, without another drop.
    async with asyncio.timeout(5):
        await catch.second.wait()
    assert "99 more" in records[1].getMessage()
    assert "specific.x!99" in records[1].getMessage()


async def test_discarded_memberships_do_not_pile_up_until_group_expiry() -> None:
    """A server discards one membership per closed connection; the layer's memory for
    groups follows the live memberships, not every connection of the last day."""
    layer = InMemoryChannelLayer()  # group_expiry: a day
    stays = await layer.new_channel()
    await layer.group_add("room", stays)
    for _ in range(5000):
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await layer.group_discard("room", channel)
    assert layer._groups == {"room": {stays: layer._groups["room"][stays]}}
    assert len(layer._group_heap) < 2500
    # The rebuilt heap still expires the member that stayed, and only it.
    await layer.group_send("room", {"type": "hello"})
    assert await layer.receive(stays) == {"type": "hello"}
    assert any(entry[2] == stays for entry in layer._group_heap)
    await layer.close()


async def test_capacity_added_later_applies_to_existing_channels() -> None:
    layer = InMemoryChannelLayer()
    await layer.send("ticks", {"type": "tick"})
    layer.add_channel_capacity("ticks", 1)
    with pytest.raises(ChannelFull):
        await layer.send("ticks", {"type": "tick"})
    assert await layer.receive("ticks") == {"type": "tick"}
    await layer.send("ticks", {"type": "tick"})
    await layer.close()


async def test_idle_channel_is_kept_until_the_sweep() -> None:
    """A receiver that comes straight back finds its channel; the sweep frees it later."""
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    first = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0)
    await layer.send(channel, {"type": "one"})  # handed straight to the waiting receiver
    assert (await first)["type"] == "one"
    assert channel in layer._channels and channel in layer._idle
    assert layer._timer is not None  # the sweep that will forget it is scheduled
    layer._sweep()
    assert channel not in layer._channels
    # A channel with a waiting receiver is never forgotten.
    waiting = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0)
    layer._sweep()
    assert channel in layer._channels
    await layer.send(channel, {"type": "two"})
    assert (await waiting)["type"] == "two"
    await layer.close()


def test_stats_book_forgets_the_least_recently_used_names() -> None:
    book = StatsBook(max_names=3)
    book.channel("worker").sent += 1
    book.group("room").sent += 1
    for name in ("a", "b"):
        book.channel(name)
        book.group(name)
    book.channel("worker").sent += 1  # in use: kept
    book.group("room").sent += 1
    book.channel("c")
    book.group("c")
    snapshot = book.snapshot()
    assert set(snapshot.channels) == {"b", "worker", "c"}
    assert snapshot.channels["worker"].sent == 2
    assert set(snapshot.groups) == {"b", "room", "c"}
    assert snapshot.groups["room"].sent == 2


async def test_a_busy_channel_keeps_its_counters_among_many_short_lived_ones() -> None:
    layer = InMemoryChannelLayer()
    layer._book.max_names = 5
    await layer.send("jobs", {"type": "job"})
    for _ in range(10):  # connections that come and go
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "hello"})
    await layer.send("jobs", {"type": "job"})
    stats = layer.stats()
    assert stats.channels["jobs"].sent == 2
    assert stats.channels["jobs"].pending == 2
    await layer.close()


async def test_receive_nowait_takes_the_backlog_and_skips_expired_messages() -> None:
    layer = InMemoryChannelLayer(expiry=60)
    channel = await layer.new_channel()
    for i in range(3):
        await layer.send(channel, {"type": "n", "n": i})
    assert [layer.receive_nowait(channel) for _ in range(4)] == [
        {"type": "n", "n": 0},
        {"type": "n", "n": 1},
        {"type": "n", "n": 2},
        None,
    ]
    clock = ManualClock()
    short = InMemoryChannelLayer(expiry=0.01, clock=clock)
    other = await short.new_channel()
    await short.send(other, {"type": "old"})
    clock.advance(0.02)  # its expiry passes
    assert short.receive_nowait(other) is None
    assert short.stats().expired == 1
    await layer.close()
    assert layer.receive_nowait(channel) is None
    await short.close()


def test_receive_nowait_from_another_loop_is_none() -> None:
    layer = InMemoryChannelLayer()

    async def fill() -> str:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "kept"})
        return channel

    async def peek(channel: str) -> Any:
        return layer.receive_nowait(channel)

    home = asyncio.new_event_loop()
    try:
        channel = home.run_until_complete(fill())
        # The state lives on the home loop: another loop may not touch it without waiting.
        home_thread = threading.Thread(target=home.run_forever)
        home_thread.start()
        try:
            assert asyncio.run(peek(channel)) is None
        finally:
            home.call_soon_threadsafe(home.stop)
            home_thread.join()
        assert home.run_until_complete(peek(channel)) == {"type": "kept"}
    finally:
        home.close()


def test_receive_forwarded_to_a_loop_that_ends_raises_layer_closed() -> None:
    """The caller of a forwarded receive was not cancelled: when the layer's loop ends under
    it (its asyncio.run returned), it hears LayerClosed, not a CancelledError of its own."""
    from kanal.exceptions import LayerClosed

    layer = InMemoryChannelLayer()
    bound = threading.Event()
    stop = threading.Event()
    names: list[str] = []

    def home() -> None:
        async def main() -> None:
            await layer.flush()  # binds the layer to this loop
            names.append(await layer.new_channel())
            bound.set()
            await asyncio.to_thread(stop.wait)

        asyncio.run(main())

    thread = threading.Thread(target=home)
    thread.start()
    try:
        assert bound.wait(10)

        entered = threading.Event()
        take = layer._receive_item

        async def spying(channel: str) -> tuple[float, bytes]:
            entered.set()  # on the home loop, in the step that goes on to wait
            return await take(channel)

        layer._receive_item = spying  # type: ignore[method-assign]

        async def caller() -> None:
            receiving = asyncio.ensure_future(layer.receive(names[0]))
            assert await asyncio.to_thread(entered.wait, 10)  # forwarded, and waiting there
            stop.set()  # the home loop's asyncio.run ends and cancels what it runs
            with pytest.raises(LayerClosed, match="stopped"):
                async with asyncio.timeout(10):
                    await receiving

        asyncio.run(caller())
    finally:
        stop.set()
        thread.join(10)
