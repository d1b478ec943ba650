"""The channel-layer conformance suite: one set of tests that every backend passes.

A backend's test module subclasses :class:`ChannelLayerConformance` and says how to build a
layer; pytest then collects every ``test_*`` method below for that backend::

    from kanal.testing import ChannelLayerConformance

    class TestMyLayer(ChannelLayerConformance):
        shared_between_instances = True      # two instances see the same channels

        def make_layer(self, **options):
            return MyChannelLayer(**options)

Each test builds its layers through :meth:`~ChannelLayerConformance.make_layer`, runs under
``asyncio.run`` with a deadline (no pytest-asyncio needed), flushes before and after, and
closes what it made. Subclasses may add pytest fixtures (``autouse``) to start servers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from kanal.exceptions import (
    ChannelFull,
    InvalidMessage,
    InvalidName,
    LayerClosed,
    MessageTooLarge,
    ReceiveTimeout,
    SyncContextError,
)
from kanal.layers._base import BaseChannelLayer
from kanal.testing._clock import ManualClock
from kanal.testing._harness import layer_test as _layer_test
from kanal.testing._history_conformance import HistoryConformance
from kanal.testing._presence_conformance import PresenceConformance

__all__ = ["ChannelLayerConformance"]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class ChannelLayerConformance(HistoryConformance, PresenceConformance):
    """Base class of a backend's conformance tests. Override :meth:`make_layer`.

    The group history checks come from :class:`~kanal.testing._history_conformance.
    HistoryConformance` (run when the backend's ``supports_history`` is true).

    The presence checks (:class:`~kanal.testing._presence_conformance.PresenceConformance`)
    are part of it; a backend without presence sets ``supports_presence = False``, and
    they check that it says so plainly instead.
    """

    #: Two layers made by ``make_layer`` share channels and groups (true for networked ones).
    shared_between_instances: ClassVar[bool] = False
    #: The keyword through which ``make_layer`` (the backend's constructor, usually) takes
    #: a clock: a callable returning seconds, what expiry is measured by. With it, the
    #: expiry tests move a :class:`~kanal.testing.ManualClock` forward instead of waiting
    #: for real time. ``None``: the backend's expiry runs on real time (Redis's does).
    clock_option: ClassVar[str | None] = None
    #: The smallest expiry, in seconds, that the backend honours with reasonable precision
    #: (the expiry the tests use when real time must pass).
    expiry_granularity: ClassVar[float] = 0.1
    #: How long to wait before concluding that no message is coming.
    quiet_period: ClassVar[float] = 0.2
    #: Deadline for one test.
    timeout: ClassVar[float] = 30.0

    def make_layer(self, **options: Any) -> BaseChannelLayer:
        """Build a new layer of the backend under test with these constructor options."""
        raise NotImplementedError(f"{type(self).__name__} must define make_layer(**options)")

    # -- harness -------------------------------------------------------------------------

    def run(self, body: Callable[[Any, BaseChannelLayer], Awaitable[None]], **options: Any) -> None:
        """Run ``body(self, layer)`` on a fresh layer under ``asyncio.run`` with a deadline."""
        self._extra: list[BaseChannelLayer] = []

        async def main() -> None:
            layer = self.make_layer(**options)
            try:
                await layer.flush()
                async with asyncio.timeout(self.timeout):
                    await body(self, layer)
            finally:
                for each in [layer, *self._extra]:
                    if not each.closed:
                        await each.flush()
                        await each.close()

        asyncio.run(main())

    def another_layer(self, **options: Any) -> BaseChannelLayer:
        """A second layer for the same test, closed with the first."""
        layer = self.make_layer(**options)
        self._extra.append(layer)
        return layer

    async def assert_nothing(self, layer: BaseChannelLayer, channel: str) -> None:
        """Assert that no message arrives on ``channel`` within ``quiet_period``."""
        try:
            async with asyncio.timeout(self.quiet_period):
                message = await layer.receive(channel)
        except TimeoutError:
            return
        raise AssertionError(f"expected no message on {channel!r}, got {message!r}")

    async def receive_soon(self, layer: BaseChannelLayer, channel: str) -> dict[str, Any]:
        """Receive from ``channel``, failing the test after 5 s instead of hanging."""
        async with asyncio.timeout(5):
            return await layer.receive(channel)

    # -- send and receive ----------------------------------------------------------------

    @_layer_test()
    async def test_send_receive_in_order(self, layer: BaseChannelLayer) -> None:
        """Messages to one channel come out in the order they went in."""
        channel = await layer.new_channel()
        for i in range(20):
            await layer.send(channel, {"type": "test.message", "n": i})
        received = [(await self.receive_soon(layer, channel))["n"] for _ in range(20)]
        assert received == list(range(20))
        await self.assert_nothing(layer, channel)

    @_layer_test()
    async def test_receive_nowait_mixed_with_receive(self, layer: BaseChannelLayer) -> None:
        """receive_nowait never waits, and mixed with receive loses and reorders nothing.

        It returns ``None`` on an empty channel; what it does return is counted as received.
        Whether a message is already in this process after a receive is the layer's
        business, so the check only holds it to order, completeness and the counts.
        """
        channel = await layer.new_channel()
        assert layer.receive_nowait(channel) is None
        before = layer.stats().received
        for i in range(30):
            await layer.send(channel, {"type": "n", "n": i})
        received: list[int] = []
        while len(received) < 30:
            message = layer.receive_nowait(channel)
            if message is None:
                message = await self.receive_soon(layer, channel)
            received.append(message["n"])
        assert received == list(range(30))
        assert layer.receive_nowait(channel) is None
        assert layer.stats().received - before == 30
        await self.assert_nothing(layer, channel)

    @_layer_test()
    async def test_named_channel(self, layer: BaseChannelLayer) -> None:
        """A plain name (not from new_channel) works as a channel, e.g. a worker queue."""
        await layer.send("thumbnails", {"type": "thumbnail.make", "id": 7})
        assert await self.receive_soon(layer, "thumbnails") == {"type": "thumbnail.make", "id": 7}

    @_layer_test()
    async def test_receive_waits_for_send(self, layer: BaseChannelLayer) -> None:
        """A receive that starts first gets the message sent later."""
        channel = await layer.new_channel()
        waiting = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(0)
        assert not waiting.done()
        await layer.send(channel, {"type": "late"})
        async with asyncio.timeout(5):
            assert await waiting == {"type": "late"}

    @_layer_test()
    async def test_values_round_trip(self, layer: BaseChannelLayer) -> None:
        """Every msgpack type comes back equal; tuples come back as lists."""
        channel = await layer.new_channel()
        message = {
            "type": "types",
            "none": None,
            "bools": [True, False],
            "int": -(2**63),
            "big": 2**64 - 1,
            "float": 1.5,
            "text": "grüße ✓",
            "bytes": b"\x00\xff",
            "nested": {"list": [1, [2, {"x": "y"}]], "tuple": (1, 2)},
        }
        await layer.send(channel, message)
        received = await self.receive_soon(layer, channel)
        assert received == {**message, "nested": {"list": [1, [2, {"x": "y"}]], "tuple": [1, 2]}}

    @_layer_test()
    async def test_sent_message_is_a_copy(self, layer: BaseChannelLayer) -> None:
        """Changing a dict after sending it does not change what was sent."""
        channel = await layer.new_channel()
        message: dict[str, Any] = {"type": "copy", "items": [1]}
        await layer.send(channel, message)
        message["items"].append(2)
        message["type"] = "changed"
        received = await self.receive_soon(layer, channel)
        assert received == {"type": "copy", "items": [1]}
        assert received is not message

    @_layer_test()
    async def test_each_message_received_once(self, layer: BaseChannelLayer) -> None:
        """Concurrent receivers on one channel: every message goes to exactly one of them."""
        total = 60
        got: list[int] = []
        done = asyncio.Event()

        async def receiver() -> None:
            while True:
                got.append((await layer.receive("shared-queue"))["n"])
                if len(got) >= total:
                    done.set()

        receivers = [asyncio.create_task(receiver()) for _ in range(5)]
        for i in range(total):
            await layer.send("shared-queue", {"type": "job", "n": i})
        async with asyncio.timeout(10):
            await done.wait()
        for task in receivers:
            task.cancel()
        await asyncio.gather(*receivers, return_exceptions=True)
        assert sorted(got) == list(range(total))
        await self.assert_nothing(layer, "shared-queue")

    @_layer_test()
    async def test_new_channel_names_are_unique_and_usable(self, layer: BaseChannelLayer) -> None:
        """new_channel returns distinct, valid, process-specific names with the prefix."""
        names = {await layer.new_channel() for _ in range(500)}
        assert len(names) == 500
        custom = await layer.new_channel("chat")
        assert custom.startswith("chat.") and "!" in custom and not custom.endswith("!")
        for name in [*list(names)[:3], custom]:
            assert layer.valid_channel_name(name, receive=True)
            await layer.send(name, {"type": "hello", "to": name})
            assert (await self.receive_soon(layer, name))["to"] == name

    @_layer_test()
    async def test_cancelled_receive_loses_nothing(self, layer: BaseChannelLayer) -> None:
        """Receives cancelled at any moment (timeouts) never lose or reorder a message."""
        channel = await layer.new_channel()
        waiting = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await layer.send(channel, {"type": "after-cancel"})
        assert await self.receive_soon(layer, channel) == {"type": "after-cancel"}

        total = 150
        got: list[int] = []

        async def sender() -> None:
            for i in range(total):
                await layer.send(channel, {"type": "n", "n": i})
                if i % 7 == 0:
                    await asyncio.sleep(0)

        async def impatient_receiver() -> None:
            while len(got) < total:
                try:
                    async with asyncio.timeout(0.001):
                        got.append((await layer.receive(channel))["n"])
                except TimeoutError:
                    pass

        await asyncio.gather(sender(), impatient_receiver())
        assert got == list(range(total))

    @_layer_test()
    async def test_send_race_with_cancel(self, layer: BaseChannelLayer) -> None:
        """A message sent just as its receiver is cancelled is delivered once, to someone."""
        channel = await layer.new_channel()
        for i in range(20):
            waiting = asyncio.create_task(layer.receive(channel))
            for _ in range(i % 4):
                await asyncio.sleep(0)
            await layer.send(channel, {"type": "race", "n": i})
            waiting.cancel()
            results = await asyncio.gather(waiting, return_exceptions=True)
            if isinstance(results[0], dict):
                assert results[0]["n"] == i
            else:
                assert (await self.receive_soon(layer, channel))["n"] == i
        await self.assert_nothing(layer, channel)

    # -- validation ----------------------------------------------------------------------

    @_layer_test()
    async def test_invalid_channel_names(self, layer: BaseChannelLayer) -> None:
        """Bad names raise InvalidName (also a TypeError, as in Channels) naming the value."""
        for bad in ["", "has space", "ünicode", "a" * 100, "two!bangs!", "slash/no"]:
            try:
                await layer.send(bad, {"type": "x"})
            except InvalidName as exc:
                assert isinstance(exc, TypeError)
                assert repr(bad) in str(exc)
            else:
                raise AssertionError(f"send to {bad!r} did not raise")
        for bad_type in [None, 42, b"bytes"]:
            try:
                await layer.send(bad_type, {"type": "x"})  # type: ignore[arg-type]
            except InvalidName:
                pass
            else:
                raise AssertionError(f"send to {bad_type!r} did not raise")
        try:
            await layer.receive("specific.abc!")
        except InvalidName as exc:
            assert "specific.abc!" in str(exc)
        else:
            raise AssertionError("receive on a bare process prefix did not raise")
        assert layer.valid_channel_name("a" * 99)

    @_layer_test()
    async def test_invalid_group_names(self, layer: BaseChannelLayer) -> None:
        """Group names follow the channel rules but never contain '!'."""
        channel = await layer.new_channel()
        for bad in ["", "room 1", "room!1", "x" * 100]:
            for call in (
                layer.group_add(bad, channel),
                layer.group_discard(bad, channel),
                layer.group_send(bad, {"type": "x"}),
            ):
                try:
                    await call
                except InvalidName as exc:
                    assert repr(bad) in str(exc)
                else:
                    raise AssertionError(f"group name {bad!r} did not raise")
        try:
            await layer.group_add("room", "bad channel")
        except InvalidName:
            pass
        else:
            raise AssertionError("group_add with a bad channel name did not raise")

    @_layer_test()
    async def test_invalid_messages(self, layer: BaseChannelLayer) -> None:
        """Unserialisable messages are refused with the path of the bad value; nothing lost."""
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "before"})
        cases: list[tuple[Any, str]] = [
            (["not", "a", "dict"], "dict"),
            ({"type": "x", "when": {1, 2}}, "['when']"),
            ({"type": "x", "deep": {"list": [1, object()]}}, "['deep']['list'][1]"),
            ({"type": "x", "huge": 2**70}, "['huge']"),
            ({1: "non-str key"}, "key"),
        ]
        for message, fragment in cases:
            try:
                await layer.send(channel, message)
            except InvalidMessage as exc:
                assert isinstance(exc, TypeError)
                assert fragment in str(exc), (fragment, str(exc))
            else:
                raise AssertionError(f"send of {message!r} did not raise")
            try:
                await layer.group_send("room", message)
            except InvalidMessage:
                pass
            else:
                raise AssertionError(f"group_send of {message!r} did not raise")
        assert await self.receive_soon(layer, channel) == {"type": "before"}
        await self.assert_nothing(layer, channel)

    @_layer_test(max_message_size=1024)
    async def test_message_size_limit(self, layer: BaseChannelLayer) -> None:
        """A message above max_message_size raises MessageTooLarge; below passes."""
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "small", "data": "x" * 900})
        try:
            await layer.send(channel, {"type": "big", "data": "x" * 2000})
        except MessageTooLarge as exc:
            assert exc.limit == 1024 and exc.size > 1024
            assert "1024" in str(exc)
        else:
            raise AssertionError("an oversized message was sent")
        try:
            await layer.group_send("room", {"type": "big", "data": "x" * 2000})
        except MessageTooLarge:
            pass
        else:
            raise AssertionError("an oversized group message was sent")
        assert (await self.receive_soon(layer, channel))["type"] == "small"

    # -- capacity ------------------------------------------------------------------------

    @_layer_test(capacity=3)
    async def test_capacity_and_channel_full(self, layer: BaseChannelLayer) -> None:
        """The send past capacity raises ChannelFull; accepted messages all arrive."""
        channel = await layer.new_channel()
        for i in range(3):
            await layer.send(channel, {"type": "n", "n": i})
        try:
            await layer.send(channel, {"type": "n", "n": 99})
        except ChannelFull as exc:
            assert exc.channel == channel and exc.capacity == 3
            assert channel in str(exc)
        else:
            raise AssertionError("send to a full channel did not raise ChannelFull")
        assert (await self.receive_soon(layer, channel))["n"] == 0
        await layer.send(channel, {"type": "n", "n": 3})
        got = [(await self.receive_soon(layer, channel))["n"] for _ in range(3)]
        assert got == [1, 2, 3]

    @_layer_test(capacity=2, channel_capacity={"big.*": 5, re.compile(r"^tiny$"): 1})
    async def test_capacity_per_pattern(self, layer: BaseChannelLayer) -> None:
        """channel_capacity overrides by glob or compiled regex; others keep the default."""
        assert layer.get_capacity("big.queue") == 5
        assert layer.get_capacity("tiny") == 1
        assert layer.get_capacity("other") == 2
        for name, capacity in [("big.queue", 5), ("tiny", 1), ("other", 2)]:
            for i in range(capacity):
                await layer.send(name, {"type": "fill", "n": i})
            try:
                await layer.send(name, {"type": "fill", "n": capacity})
            except ChannelFull:
                pass
            else:
                raise AssertionError(f"{name!r} accepted more than {capacity} messages")

    @_layer_test(capacity=2)
    async def test_full_channel_does_not_affect_others(self, layer: BaseChannelLayer) -> None:
        """One full channel of a process does not cost its sibling channels their messages."""
        full = await layer.new_channel()
        sibling = await layer.new_channel()
        await layer.group_add("room", full)
        await layer.group_add("room", sibling)
        for i in range(2):
            await layer.send(full, {"type": "fill", "n": i})
        await layer.send(sibling, {"type": "direct"})
        await layer.group_send("room", {"type": "broadcast"})
        assert (await self.receive_soon(layer, sibling))["type"] == "direct"
        assert (await self.receive_soon(layer, sibling))["type"] == "broadcast"
        assert [(await self.receive_soon(layer, full))["n"] for _ in range(2)] == [0, 1]
        await self.assert_nothing(layer, full)

    # -- expiry --------------------------------------------------------------------------

    def _clock(self) -> tuple[ManualClock | None, dict[str, Any]]:
        """A manual clock and the option that hands it to the layer, if the backend takes one."""
        if self.clock_option is None:
            return None, {}
        clock = ManualClock(1000.0)
        return clock, {self.clock_option: clock}

    async def _send_once_there_is_room(
        self, layer: BaseChannelLayer, channel: str, message: dict[str, Any]
    ) -> None:
        """Send ``message`` as soon as ``channel`` takes it: real time, not a fixed wait, until
        its messages expire (the test's deadline bounds the wait)."""
        while True:
            try:
                await layer.send(channel, message)
                return
            except ChannelFull:
                await asyncio.sleep(self.expiry_granularity / 10)

    def test_expiry(self) -> None:
        """A message not received within ``expiry`` is gone; it frees its place."""
        expiry = self.expiry_granularity
        clock, clock_option = self._clock()

        async def body(self: ChannelLayerConformance, layer: BaseChannelLayer) -> None:
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "stale"})
            if clock is not None:
                clock.advance(expiry / 2)
            try:
                await layer.send(channel, {"type": "too-many"})
            except ChannelFull:
                pass  # capacity 1, and the first message is not stale yet
            else:
                raise AssertionError("a channel of capacity 1 took a second message")
            if clock is not None:
                clock.advance(expiry)
                await layer.send(channel, {"type": "fresh"})  # the stale one is gone
            else:
                await self._send_once_there_is_room(layer, channel, {"type": "fresh"})
            assert (await self.receive_soon(layer, channel))["type"] == "fresh"
            await self.assert_nothing(layer, channel)

        self.run(body, expiry=expiry, capacity=1, **clock_option)

    def test_group_expiry(self) -> None:
        """Membership lapses after ``group_expiry`` unless group_add renews it."""
        expiry = self.expiry_granularity
        clock, clock_option = self._clock()

        async def body(self: ChannelLayerConformance, layer: BaseChannelLayer) -> None:
            lapsing = await layer.new_channel()
            renewed = await layer.new_channel()
            await layer.group_add("room", lapsing)
            await layer.group_add("room", renewed)
            if clock is not None:
                clock.advance(expiry * 1.5)
                await layer.group_add("room", renewed)
                clock.advance(expiry * 1.5)  # lapsing's membership ended at 2.5
            else:
                # The renewal must come well after the first group_add: real time itself
                # is under test here.
                await asyncio.sleep(expiry * 1.5)
                await layer.group_add("room", renewed)
                await self._until_lapsed(layer, lapsing, renewed)
            await layer.group_send("room", {"type": "hello"})
            assert (await self.receive_soon(layer, renewed))["type"] == "hello"
            await self.assert_nothing(layer, lapsing)

        self.run(body, group_expiry=expiry * 2.5, **clock_option)

    async def _until_lapsed(self, layer: BaseChannelLayer, lapsing: str, renewed: str) -> None:
        """Probe ``room`` until ``lapsing`` no longer gets its messages (``renewed`` must)."""
        while True:
            await layer.group_send("room", {"type": "probe"})
            assert (await self.receive_soon(layer, renewed))["type"] == "probe"
            try:
                async with asyncio.timeout(self.quiet_period):
                    await layer.receive(lapsing)
            except TimeoutError:
                return
            await asyncio.sleep(self.expiry_granularity / 10)

    # -- groups --------------------------------------------------------------------------

    @_layer_test()
    async def test_group_send_reaches_every_member_once(self, layer: BaseChannelLayer) -> None:
        """Every member gets the message once, even if added twice."""
        members = [await layer.new_channel() for _ in range(5)]
        outsider = await layer.new_channel()
        for channel in members:
            await layer.group_add("room", channel)
        await layer.group_add("room", members[0])
        await layer.group_send("room", {"type": "chat.message", "text": "hi"})
        for channel in members:
            assert await self.receive_soon(layer, channel) == {"type": "chat.message", "text": "hi"}
        for channel in [members[0], outsider]:
            await self.assert_nothing(layer, channel)

    @_layer_test()
    async def test_group_discard(self, layer: BaseChannelLayer) -> None:
        """A discarded member gets nothing; discarding a non-member is silent."""
        stays = await layer.new_channel()
        leaves = await layer.new_channel()
        await layer.group_add("room", stays)
        await layer.group_add("room", leaves)
        # A group_send before the change: what a backend keeps of the membership between
        # sends must not outlive the discard.
        await layer.group_send("room", {"type": "before"})
        for channel in (stays, leaves):
            assert (await self.receive_soon(layer, channel))["type"] == "before"
        await layer.group_discard("room", leaves)
        await layer.group_discard("room", leaves)
        await layer.group_discard("nobody-here", leaves)
        await layer.group_send("room", {"type": "hello"})
        await layer.group_send("empty-group", {"type": "hello"})
        assert (await self.receive_soon(layer, stays))["type"] == "hello"
        await self.assert_nothing(layer, leaves)

    @_layer_test()
    async def test_discard_channel(self, layer: BaseChannelLayer) -> None:
        """A discarded channel's messages are freed and counted as discarded, or (a backend
        that leaves them to expire) still there: never lost uncounted. Other channels
        and groups are untouched; discarding twice, or an unknown channel, is silent."""
        gone = await layer.new_channel()
        stays = await layer.new_channel()
        await layer.group_add("room", stays)
        for index in range(3):
            await layer.send(gone, {"type": "waiting", "n": index})
        await layer.send(stays, {"type": "kept"})
        before = layer.stats().discarded
        await layer.discard_channel(gone)
        await layer.discard_channel(gone)
        await layer.discard_channel(await layer.new_channel())
        freed = layer.stats().discarded - before
        assert freed in (0, 3), freed
        if freed == 0:
            for index in range(3):
                assert (await self.receive_soon(layer, gone))["n"] == index
        assert (await self.receive_soon(layer, stays))["type"] == "kept"
        await layer.group_send("room", {"type": "after"})
        assert (await self.receive_soon(layer, stays))["type"] == "after"

    @_layer_test()
    async def test_group_members_get_their_own_copies(self, layer: BaseChannelLayer) -> None:
        """Members of one process may share the work of decoding a group message, never
        the message: what one member changes, at any depth, no other member sees."""
        members = [await layer.new_channel() for _ in range(3)]
        for channel in members:
            await layer.group_add("room", channel)
        sent: dict[str, Any] = {
            "type": "chat.message",
            "user": {"id": 7, "tags": ["a", "b"]},
            "items": [{"n": 1}, [2, 3]],
            "raw": b"\x00\x01",
        }
        await layer.group_send("room", sent)
        first = await self.receive_soon(layer, members[0])
        assert first == sent
        first.pop("type")
        first["user"]["id"] = 8
        first["user"]["tags"].append("c")
        first["items"][0]["n"] = 99
        first["items"][1].clear()
        second = layer.receive_nowait(members[1]) or await self.receive_soon(layer, members[1])
        third = await self.receive_soon(layer, members[2])
        assert second == sent and third == sent
        assert second["user"] is not third["user"]
        assert second["items"][0] is not third["items"][0]

    @_layer_test(capacity=1)
    async def test_group_send_counts_drops(self, layer: BaseChannelLayer) -> None:
        """group_send skips a full member without raising, and counts and logs the drop."""
        full = await layer.new_channel()
        fine = await layer.new_channel()
        await layer.group_add("room", full)
        await layer.group_add("room", fine)
        await layer.send(full, {"type": "fill"})
        records = _Records()
        log = logging.getLogger("kanal.layers")
        log.addHandler(records)
        try:
            await layer.group_send("room", {"type": "broadcast"})
        finally:
            log.removeHandler(records)
        assert (await self.receive_soon(layer, fine))["type"] == "broadcast"
        assert (await self.receive_soon(layer, full))["type"] == "fill"
        await self.assert_nothing(layer, full)
        stats = layer.stats()
        assert stats.dropped == 1
        assert stats.groups["room"].dropped == 1
        assert stats.channels[full].dropped == 1
        assert any(full in record.getMessage() for record in records.records), [
            r.getMessage() for r in records.records
        ]

    @_layer_test()
    async def test_stats_count_traffic(self, layer: BaseChannelLayer) -> None:
        """stats() counts what was sent and received, per channel and in total."""
        channel = await layer.new_channel()
        before = layer.stats()
        for i in range(4):
            await layer.send(channel, {"type": "n", "n": i})
        for _ in range(3):
            await self.receive_soon(layer, channel)
        stats = layer.stats()
        assert stats.sent - before.sent == 4
        assert stats.received - before.received == 3
        assert stats.channels[channel].sent == 4
        assert stats.channels[channel].received == 3

    # -- flush and close -----------------------------------------------------------------

    @_layer_test()
    async def test_flush(self, layer: BaseChannelLayer) -> None:
        """flush drops messages and groups; a receiver already waiting still gets new ones."""
        channel = await layer.new_channel()
        waiting_on = await layer.new_channel()
        await layer.send(channel, {"type": "old"})
        await layer.group_add("room", channel)
        waiting = asyncio.create_task(layer.receive(waiting_on))
        await asyncio.sleep(0)
        await layer.flush()
        await layer.group_send("room", {"type": "to-nobody"})
        await self.assert_nothing(layer, channel)
        await layer.send(waiting_on, {"type": "new"})
        async with asyncio.timeout(5):
            assert (await waiting)["type"] == "new"

    @_layer_test()
    async def test_close(self, layer: BaseChannelLayer) -> None:
        """close wakes pending receivers with LayerClosed; later calls raise LayerClosed."""
        channel = await layer.new_channel()
        waiting = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(0)
        await layer.close()
        assert layer.closed
        async with asyncio.timeout(5):
            result = await asyncio.gather(waiting, return_exceptions=True)
        assert isinstance(result[0], LayerClosed), result
        for call in (
            lambda: layer.send(channel, {"type": "x"}),
            lambda: layer.receive(channel),
            lambda: layer.group_add("room", channel),
            lambda: layer.group_send("room", {"type": "x"}),
        ):
            try:
                await call()
            except LayerClosed:
                pass
            else:
                raise AssertionError("an operation on a closed layer did not raise")
        await layer.close()  # closing twice is harmless

    @_layer_test()
    async def test_extensions(self, layer: BaseChannelLayer) -> None:
        """The layer announces the Channels extensions it implements."""
        assert "groups" in layer.extensions and "flush" in layer.extensions

    # -- the synchronous facade ----------------------------------------------------------

    @_layer_test()
    async def test_sync_facade_from_a_thread(self, layer: BaseChannelLayer) -> None:
        """Sync code in another thread sends, group-sends and receives while the loop runs."""
        channel = await layer.new_channel()
        await asyncio.to_thread(layer.sync.send, channel, {"type": "from-thread"})
        assert (await self.receive_soon(layer, channel))["type"] == "from-thread"
        await asyncio.to_thread(layer.sync.group_add, "room", channel)
        await asyncio.to_thread(layer.sync.group_send, "room", {"type": "group-from-thread"})
        assert (await self.receive_soon(layer, channel))["type"] == "group-from-thread"
        await layer.send(channel, {"type": "to-thread"})
        received = await asyncio.to_thread(layer.sync.receive, channel, 5)
        assert received["type"] == "to-thread"
        try:
            await asyncio.to_thread(layer.sync.receive, channel, 0.05)
        except ReceiveTimeout as exc:
            assert isinstance(exc, TimeoutError)
        else:
            raise AssertionError("sync receive with a timeout did not time out")
        try:
            layer.sync.send(channel, {"type": "blocking-in-loop"})
        except SyncContextError:
            pass
        else:
            raise AssertionError("a sync call inside the event loop did not raise")
        await layer.send(channel, {"type": "still-works"})
        assert (await self.receive_soon(layer, channel))["type"] == "still-works"

    def test_receive_from_another_loop_cancelled_loses_nothing(self) -> None:
        """A receive made on one event loop for a layer living on another, cancelled just
        after its message was taken there, puts the message back: nothing is lost.

        The caller's loop is blocked on purpose while the layer's loop takes the message,
        so the cancel arrives after the take, as a timeout firing at that moment would.
        """
        layer = self.make_layer()
        home = asyncio.new_event_loop()
        thread = threading.Thread(target=home.run_forever, name="conformance-home")
        thread.start()

        def on_home(coroutine: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coroutine, home).result(10)

        async def received() -> int:
            return layer.stats().received

        async def main(channel: str) -> None:
            before = on_home(received())
            receiving = asyncio.ensure_future(layer.receive(channel))
            await asyncio.sleep(0)  # the receive is forwarded to the layer's loop
            on_home(layer.send(channel, {"type": "taken"}))
            for _ in range(500):  # blocking this loop: the cancel cannot come earlier
                if on_home(received()) > before:
                    break
                on_home(asyncio.sleep(0.01))
            else:
                raise AssertionError("the forwarded receive never took the message")
            receiving.cancel()
            results = await asyncio.gather(receiving, return_exceptions=True)
            assert isinstance(results[0], asyncio.CancelledError), results
            async with asyncio.timeout(10):
                assert await layer.receive(channel) == {"type": "taken"}
            assert on_home(received()) == before + 1

        try:
            on_home(layer.flush())  # binds the layer to the home loop
            channel = on_home(layer.new_channel())
            asyncio.run(main(channel))
            on_home(layer.flush())
            on_home(layer.close())
        finally:
            home.call_soon_threadsafe(home.stop)
            thread.join(10)
            home.close()

    def test_sync_facade_without_event_loop(self) -> None:
        """A plain script, with no event loop, uses the layer through ``layer.sync``."""
        layer = self.make_layer()
        sync = layer.sync
        try:
            sync.flush()
            channel = sync.new_channel()
            sync.send(channel, {"type": "script"})
            assert sync.receive(channel, timeout=5) == {"type": "script"}
            sync.group_add("room", channel)
            sync.group_send("room", {"type": "script-group"})
            assert sync.receive(channel, timeout=5)["type"] == "script-group"
            sync.group_discard("room", channel)
            results: list[str] = []

            def from_other_thread() -> None:
                sync.send(channel, {"type": "other-thread"})
                results.append("sent")

            threads = [threading.Thread(target=from_other_thread) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert results == ["sent"] * 4
            assert [sync.receive(channel, timeout=5)["type"] for _ in range(4)] == [
                "other-thread"
            ] * 4
        finally:
            sync.flush()
            sync.close()

    # -- several instances ---------------------------------------------------------------

    @_layer_test()
    async def test_instances_share_channels_and_groups(self, layer: BaseChannelLayer) -> None:
        """Two layer instances (e.g. two processes) reach each other's channels and groups."""
        if not self.shared_between_instances:
            import pytest

            pytest.skip(f"{type(self).__name__}: instances of this backend share nothing")
        other = self.another_layer()
        mine = await layer.new_channel()
        await other.send(mine, {"type": "from-other"})
        assert (await self.receive_soon(layer, mine))["type"] == "from-other"
        await other.send("jobs", {"type": "job"})
        assert (await self.receive_soon(layer, "jobs"))["type"] == "job"
        theirs = await other.new_channel()
        await layer.group_add("room", mine)
        await other.group_add("room", theirs)
        await other.group_send("room", {"type": "everyone"})
        assert (await self.receive_soon(layer, mine))["type"] == "everyone"
        assert (await self.receive_soon(other, theirs))["type"] == "everyone"

    # -- Django Channels ------------------------------------------------------------------

    #: The ``BACKEND`` path a Django Channels project names this backend by in
    #: ``CHANNEL_LAYERS`` (e.g. ``"kanal.layers.InMemoryChannelLayer"``); the Channels check
    #: also imports it and finds the class that :meth:`make_layer` builds. ``None``: no path.
    channels_backend: ClassVar[str | None] = None

    def test_channels_consumers_run_on_the_layer(self) -> None:
        """Django Channels' own consumers join a group, broadcast and leave on this layer.

        The layer is built with the ``CONFIG`` keys of a Channels project and put where
        Channels looks layers up. Skipped when Django Channels is not installed, or when the
        Django settings are not configured (Channels' consumers close Django's database
        connections, so they need settings: configure them in a fixture or with
        ``DJANGO_SETTINGS_MODULE``).
        """
        import os

        import pytest

        pytest.importorskip("channels", reason="the Channels check needs Django Channels")
        from django.conf import settings

        if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
            pytest.skip("the Channels check needs Django settings (none are configured)")
        config = {
            "capacity": 50,
            "expiry": 30,
            "group_expiry": 600,
            "channel_capacity": {"http.request": 200},
        }
        self.run(ChannelLayerConformance._check_channels_consumers, **config)

    async def _check_channels_consumers(self, layer: BaseChannelLayer) -> None:
        from channels.generic.websocket import AsyncJsonWebsocketConsumer
        from channels.layers import channel_layers

        from kanal.testing._communicators import WebsocketCommunicator

        if self.channels_backend is not None:
            from django.utils.module_loading import import_string

            assert import_string(self.channels_backend) is type(layer)
        assert layer.capacity == 50 and layer.get_capacity("http.request") == 200
        # An alias of its own, so that a project's "default" layer is left alone.
        alias = "kanal-conformance"

        class Room(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
            channel_layer_alias = alias
            groups = ["lobby"]

            async def receive_json(self, content: Any, **kwargs: Any) -> None:
                await self.channel_layer.group_send(
                    "lobby", {"type": "chat.message", "text": content["text"]}
                )

            async def chat_message(self, event: dict[str, Any]) -> None:
                await self.send_json({"text": event["text"], "to": self.channel_name})

        previous = channel_layers.set(alias, layer)
        try:
            alice = WebsocketCommunicator(Room.as_asgi(), "/ws/")
            bob = WebsocketCommunicator(Room.as_asgi(), "/ws/")
            assert (await alice.connect(timeout=5))[0]
            assert (await bob.connect(timeout=5))[0]
            await alice.send_json_to({"text": "hello"})
            to_bob = await bob.receive_json_from(timeout=5)
            to_alice = await alice.receive_json_from(timeout=5)
            assert to_bob["text"] == to_alice["text"] == "hello"
            assert to_bob["to"] != to_alice["to"]
            assert layer.stats().groups["lobby"].delivered == 2
            await alice.disconnect(timeout=5)
            await bob.disconnect(timeout=5)
            # Channels discarded both memberships on disconnect: only a new member hears.
            newcomer = await layer.new_channel()
            await layer.group_add("lobby", newcomer)
            await layer.group_send("lobby", {"type": "chat.message", "text": "anyone?"})
            assert (await self.receive_soon(layer, newcomer))["text"] == "anyone?"
            for gone in (to_alice["to"], to_bob["to"]):
                await self.assert_nothing(layer, gone)
        finally:
            if previous is None:
                channel_layers.backends.pop(alias, None)
            else:
                channel_layers.set(alias, previous)
