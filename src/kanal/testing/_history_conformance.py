"""The conformance checks of group history (docs/history.md), part of every backend's suite.

:class:`HistoryConformance` is a mixin of :class:`~kanal.testing.ChannelLayerConformance`:
a backend whose class says ``supports_history = True`` runs the history checks; one that
does not runs the checks that it refuses history clearly. ``history_checks`` overrides
that choice. A backend that can really lose its data (a restarted server) overrides
:meth:`lose_history` to do it; the default flushes the layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from kanal.exceptions import (
    ConfigError,
    EpochChanged,
    HistoryGap,
    InvalidPosition,
    NoHistory,
)
from kanal.layers._base import BaseChannelLayer
from kanal.layers._history import History, Position, position_of

if TYPE_CHECKING:
    from kanal.testing._clock import ManualClock

__all__ = ["HistoryConformance"]

_Body = Callable[[Any, BaseChannelLayer], Awaitable[None]]

#: The pattern the checks configure, and a group that matches it.
_PATTERN = "kept.*"
_GROUP = "kept.room"


class HistoryConformance:
    """History checks; mixed into :class:`~kanal.testing.ChannelLayerConformance`."""

    #: Run the history checks (True), the refusal checks (False), or follow the backend's
    #: ``supports_history`` (None, the default).
    history_checks: ClassVar[bool | None] = None

    if TYPE_CHECKING:  # provided by ChannelLayerConformance
        expiry_granularity: ClassVar[float]

        def make_layer(self, **options: Any) -> BaseChannelLayer: ...
        def run(self, body: Any, **options: Any) -> None: ...
        def another_layer(self, **options: Any) -> BaseChannelLayer: ...
        async def receive_soon(self, layer: BaseChannelLayer, channel: str) -> dict[str, Any]: ...
        async def assert_nothing(self, layer: BaseChannelLayer, channel: str) -> None: ...
        def _clock(self) -> tuple[ManualClock | None, dict[str, Any]]: ...

    shared_between_instances: ClassVar[bool]

    async def lose_history(self, layer: BaseChannelLayer) -> None:
        """Make the backend lose its data as an outage would (the default: a flush)."""
        await layer.flush()

    def _keeps_history(self) -> bool:
        if self.history_checks is not None:
            return self.history_checks
        layer = self.make_layer()  # only its class is looked at
        try:
            return type(layer).supports_history
        finally:
            _discard(layer)

    def _history_run(self, body: _Body, size: int = 10, ttl: float = 60.0, **options: Any) -> None:
        import pytest

        if not self._keeps_history():
            pytest.skip(f"{type(self).__name__}: the backend keeps no history")
        history = {_PATTERN: {"size": size, "ttl": ttl}}
        self.run(body, history=history, **options)

    async def _publish(self, layer: BaseChannelLayer, count: int, start: int = 0) -> None:
        for n in range(start, start + count):
            await layer.group_send(_GROUP, {"type": "kept.line", "n": n})

    # -- positions and recovery ------------------------------------------------------------

    def test_history_positions_and_recovery(self) -> None:
        """Each message gets the next offset of one epoch; what came after a position is
        returned in order, as members received it; the latest position misses nothing."""

        async def body(self: HistoryConformance, layer: BaseChannelLayer) -> None:
            member = await layer.new_channel()
            await layer.group_add(_GROUP, member)
            await self._publish(layer, 5)
            received = [await self.receive_soon(layer, member) for _ in range(5)]
            positions = [position_of(message) for message in received]
            assert all(p is not None for p in positions), received
            epoch = positions[0].epoch  # type: ignore[union-attr]
            assert positions == [Position(epoch, offset) for offset in range(1, 6)]
            assert [m["n"] for m in received] == list(range(5))

            missed = await layer.group_history(_GROUP, since=positions[1])
            assert isinstance(missed, History)
            assert missed.messages == received[2:]
            assert missed.position == positions[4]
            # The string form, as a client sends it back, works the same.
            assert (await layer.group_history(_GROUP, since=str(positions[1]))) == missed
            latest = await layer.group_history(_GROUP, since=positions[4])
            assert latest.messages == [] and latest.position == positions[4]
            everything = await layer.group_history(_GROUP)
            assert everything.messages == received

        self._history_run(body)

    def test_history_size_bound(self) -> None:
        """At most ``size`` messages are kept; asking from before them is a HistoryGap that
        names the position to resume from."""

        async def body(self: HistoryConformance, layer: BaseChannelLayer) -> None:
            await self._publish(layer, 1)
            first = (await layer.group_history(_GROUP)).position
            await self._publish(layer, 6, start=1)
            kept = await layer.group_history(_GROUP)
            assert [m["n"] for m in kept.messages] == [3, 4, 5, 6]
            assert kept.position == Position(first.epoch, 7)
            try:
                await layer.group_history(_GROUP, since=first)
            except EpochChanged as exc:
                raise AssertionError("a gap in one epoch is not an epoch change") from exc
            except HistoryGap as exc:
                assert exc.position == kept.position and exc.since == first
            else:
                raise AssertionError("messages beyond the history's size were recovered")
            # Exactly the oldest kept one's predecessor still recovers everything after it.
            edge = await layer.group_history(_GROUP, since=Position(first.epoch, 3))
            assert [m["n"] for m in edge.messages] == [3, 4, 5, 6]

        self._history_run(body, size=4)

    def test_history_ttl_bound(self) -> None:
        """A message older than the history's ``ttl`` is no longer kept: a gap."""
        clock, clock_option = self._clock()
        ttl = 1.0 if clock is not None else self.expiry_granularity * 2

        async def body(self: HistoryConformance, layer: BaseChannelLayer) -> None:
            await self._publish(layer, 1)
            before = Position((await layer.group_history(_GROUP)).position.epoch, 0)
            assert len((await layer.group_history(_GROUP, since=before)).messages) == 1
            if clock is not None:
                clock.advance(ttl * 1.5)
            while True:  # real time must pass on a backend with no clock of ours
                try:
                    history = await layer.group_history(_GROUP, since=before)
                except EpochChanged as exc:
                    raise AssertionError("an expired message is not an epoch change") from exc
                except HistoryGap:
                    break
                assert clock is None, "the message outlived the ttl"
                assert len(history.messages) == 1
                await asyncio.sleep(self.expiry_granularity / 10)
            assert (await layer.group_history(_GROUP)).messages == []

        self._history_run(body, ttl=ttl, **clock_option)

    def test_history_epoch_changes_when_lost(self) -> None:
        """When the backend loses its data, old positions raise EpochChanged (never an empty
        recovery that looks complete), and new messages start a new epoch at offset 1."""

        async def body(self: HistoryConformance, layer: BaseChannelLayer) -> None:
            await self._publish(layer, 3)
            old = (await layer.group_history(_GROUP)).position
            await self.lose_history(layer)
            try:
                await layer.group_history(_GROUP, since=old)
            except EpochChanged as exc:
                current = exc.position
                assert isinstance(current, Position) and current.epoch != old.epoch
            else:
                raise AssertionError("a position of a lost history was recovered")
            member = await layer.new_channel()
            await layer.group_add(_GROUP, member)
            await self._publish(layer, 1, start=100)
            message = await self.receive_soon(layer, member)
            assert position_of(message) == Position(current.epoch, current.offset + 1)
            resumed = await layer.group_history(_GROUP, since=current)
            assert resumed.messages == [message]

        self._history_run(body)

    def test_history_only_for_matching_groups(self) -> None:
        """Other groups keep nothing and carry no position; asking for theirs is NoHistory.
        A malformed position is InvalidPosition."""

        async def body(self: HistoryConformance, layer: BaseChannelLayer) -> None:
            member = await layer.new_channel()
            await layer.group_add("plain", member)
            await layer.group_send("plain", {"type": "plain"})
            assert await self.receive_soon(layer, member) == {"type": "plain"}
            try:
                await layer.group_history("plain")
            except NoHistory as exc:
                assert exc.group == "plain"
            else:
                raise AssertionError("a group without history returned one")
            for bad in ("nonsense", "epoch:-1", "epoch:x", ":3"):
                try:
                    await layer.group_history(_GROUP, since=bad)
                except InvalidPosition:
                    continue
                raise AssertionError(f"{bad!r} was taken for a position")

        self._history_run(body)

    def test_history_catch_up_then_live_has_no_gap_or_duplicate(self) -> None:
        """At-least-once inside the window: a client that subscribes first, then reads the
        history since its last position, and drops what it has by offset, sees every
        message exactly once and in order, while messages keep coming."""

        async def body(self: HistoryConformance, layer: BaseChannelLayer) -> None:
            total = 60
            await self._publish(layer, 5)
            last_seen = (await layer.group_history(_GROUP)).position  # then "disconnected"
            published = asyncio.Event()

            async def publisher() -> None:
                for n in range(5, 5 + total):
                    await layer.group_send(_GROUP, {"type": "kept.line", "n": n})
                    if n == 5 + total // 3:
                        published.set()
                    await asyncio.sleep(0)
                published.set()

            task = asyncio.create_task(publisher())
            await published.wait()  # some messages were missed while away
            member = await layer.new_channel()
            await layer.group_add(_GROUP, member)  # 1. subscribe
            missed = await layer.group_history(_GROUP, since=last_seen)  # 2. catch up
            await task
            seen: list[int] = []
            offset = last_seen.offset
            for message in missed.messages:
                position = position_of(message)
                assert position is not None and position.offset == offset + 1
                offset = position.offset
                seen.append(message["n"])
            while offset < 5 + total:  # 3. live, duplicates dropped by offset
                message = await self.receive_soon(layer, member)
                position = position_of(message)
                assert position is not None and position.epoch == last_seen.epoch
                if position.offset <= offset:
                    continue
                assert position.offset == offset + 1, "a live message was skipped"
                offset = position.offset
                seen.append(message["n"])
            assert seen == list(range(5, 5 + total))
            await self.assert_nothing(layer, member)

        self._history_run(body, size=200)

    def test_history_shared_between_instances(self) -> None:
        """Another instance (another process) sees the same history and positions."""
        import pytest

        if not self.shared_between_instances:
            pytest.skip(f"{type(self).__name__}: instances of this backend share nothing")

        async def body(self: HistoryConformance, layer: BaseChannelLayer) -> None:
            history = {_PATTERN: {"size": 10, "ttl": 60.0}}
            other = self.another_layer(history=history)
            member = await other.new_channel()
            await other.group_add(_GROUP, member)
            await self._publish(layer, 2)
            await other.group_send(_GROUP, {"type": "kept.line", "n": 2})
            received = [await self.receive_soon(other, member) for _ in range(3)]
            assert [m["n"] for m in received] == [0, 1, 2]
            assert (await layer.group_history(_GROUP)).messages == received
            assert (await other.group_history(_GROUP)).messages == received

        self._history_run(body)

    # -- backends without history ------------------------------------------------------------

    def test_history_refused_clearly_without_support(self) -> None:
        """A backend without history refuses the option and group_history with kanal errors."""
        import pytest

        if self._keeps_history():
            pytest.skip(f"{type(self).__name__}: the backend keeps history")
        try:
            layer = self.make_layer(history={_PATTERN: {"size": 10, "ttl": 60}})
        except (ConfigError, TypeError) as exc:
            assert "history" in str(exc)
        else:
            _discard(layer)
            raise AssertionError("a backend without history took the history option")

        async def body(self: HistoryConformance, layer: BaseChannelLayer) -> None:
            try:
                await layer.group_history(_GROUP)
            except NoHistory:
                return
            raise AssertionError("group_history did not raise NoHistory")

        self.run(body)


def _discard(layer: BaseChannelLayer) -> None:
    """Close a layer made only to look at, which never ran on a loop."""

    async def close() -> None:
        await layer.close()

    asyncio.run(close())
