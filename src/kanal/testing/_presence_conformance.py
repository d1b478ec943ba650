"""The presence checks of the conformance suite (``docs/presence.md``).

:class:`PresenceConformance` is a mixin of :class:`~kanal.testing.ChannelLayerConformance`,
so every backend runs these. A backend without presence sets ``supports_presence = False``:
the checks are then skipped, except the one that it says so plainly (``"presence"`` absent
from its extensions, :class:`~kanal.exceptions.PresenceNotSupported` raised).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from kanal.exceptions import InvalidMessage, InvalidName, PresenceNotSupported
from kanal.layers._base import BaseChannelLayer
from kanal.layers._direct import DIRECT_MESSAGE_TYPE
from kanal.layers._presence import PRESENCE_DIFF_TYPE, Presences
from kanal.testing._harness import layer_test

if TYPE_CHECKING:
    from kanal.testing._clock import ManualClock

__all__ = ["PresenceConformance", "apply_presence_diff"]


def apply_presence_diff(state: Presences, diff: dict[str, Any]) -> None:
    """Apply a presence diff to ``state`` as a client does: its leaves, then its joins."""
    for key, refs in diff["leaves"].items():
        entries = state.get(key)
        if entries is not None:
            for ref in refs:
                entries.pop(ref, None)
            if not entries:
                del state[key]
    for key, refs in diff["joins"].items():
        state.setdefault(key, {}).update(refs)


class PresenceConformance:
    """Presence checks; mixed into ``ChannelLayerConformance``, which provides the harness."""

    #: The backend keeps presence (lists ``"presence"`` in its extensions).
    supports_presence: ClassVar[bool] = True

    if TYPE_CHECKING:
        shared_between_instances: ClassVar[bool]
        clock_option: ClassVar[str | None]
        expiry_granularity: ClassVar[float]
        quiet_period: ClassVar[float]

        def run(self, body: Callable[..., Any], **options: Any) -> None: ...
        def another_layer(self, **options: Any) -> BaseChannelLayer: ...
        def _clock(self) -> tuple[ManualClock | None, dict[str, Any]]: ...
        async def assert_nothing(self, layer: BaseChannelLayer, channel: str) -> None: ...

    def _needs_presence(self) -> None:
        if not self.supports_presence:
            import pytest

            pytest.skip(f"{type(self).__name__}: the backend keeps no presence")

    async def next_diff(self, layer: BaseChannelLayer, channel: str) -> dict[str, Any]:
        """The next presence diff on ``channel`` (a layer message or a direct JSON frame)."""
        async with asyncio.timeout(10):
            message = await layer.receive(channel)
        if message["type"] == DIRECT_MESSAGE_TYPE:
            message = json.loads(message["text"])
        assert message["type"] == PRESENCE_DIFF_TYPE, message
        return message

    async def diffs_until(
        self, layer: BaseChannelLayer, channel: str, state: Presences, expected: Presences
    ) -> list[dict[str, Any]]:
        """Apply diffs from ``channel`` to ``state`` until it equals ``expected``; the diffs."""
        diffs = []
        while state != expected:
            diff = await self.next_diff(layer, channel)
            apply_presence_diff(state, diff)
            diffs.append(diff)
        return diffs

    # -- the checks ---------------------------------------------------------------------

    @layer_test()
    async def test_presence_extension(self, layer: BaseChannelLayer) -> None:
        """A backend with presence lists it; one without says so with a clear error."""
        if self.supports_presence:
            assert "presence" in layer.extensions
            assert await layer.presence("nobody.here") == {}
            return
        assert "presence" not in layer.extensions
        channel = await layer.new_channel()
        for call in (
            layer.presence_join("room", channel, "alice"),
            layer.presence_leave("room", channel),
            layer.presence("room"),
        ):
            try:
                await call
            except PresenceNotSupported as exc:
                assert type(layer).__name__ in str(exc)
            else:
                raise AssertionError("a backend without presence accepted a presence call")

    @layer_test()
    async def test_presence_one_entry_per_key(self, layer: BaseChannelLayer) -> None:
        """presence() lists each key once, with the metadata of every connection of it."""
        self._needs_presence()
        await layer.presence_join("room", "conn.a!1", "alice", {"name": "Alice", "tab": 1})
        await layer.presence_join("room", "conn.a!2", "alice", {"name": "Alice", "tab": 2})
        await layer.presence_join("room", "conn.b!1", "bob")
        await layer.presence_join("hall", "conn.b!1", "bob", {"n": [1, 2.5, None, b"\x00"]})
        assert await layer.presence("room") == {
            "alice": {
                "conn.a!1": {"name": "Alice", "tab": 1},
                "conn.a!2": {"name": "Alice", "tab": 2},
            },
            "bob": {"conn.b!1": {}},
        }
        assert await layer.presence("hall") == {"bob": {"conn.b!1": {"n": [1, 2.5, None, b"\x00"]}}}

    @layer_test()
    async def test_presence_leave(self, layer: BaseChannelLayer) -> None:
        """A left connection is gone; a key goes with its last connection; leaving twice or
        leaving a group never joined is silent."""
        self._needs_presence()
        await layer.presence_join("room", "conn.a!1", "alice")
        await layer.presence_join("room", "conn.a!2", "alice")
        await layer.presence_leave("room", "conn.a!1")
        assert await layer.presence("room") == {"alice": {"conn.a!2": {}}}
        await layer.presence_leave("room", "conn.a!2")
        await layer.presence_leave("room", "conn.a!2")
        await layer.presence_leave("elsewhere", "conn.a!2")
        assert await layer.presence("room") == {}

    @layer_test()
    async def test_presence_diffs_follow_the_changes(self, layer: BaseChannelLayer) -> None:
        """Members of the group get diffs that, applied in order, give what presence() says:
        joins, leaves, and a metadata update (the old entry's leave, the new one's join)."""
        self._needs_presence()
        watcher = await layer.new_channel()
        await layer.group_add("room", watcher)
        state: Presences = {}
        await layer.presence_join("room", "conn.a!1", "alice", {"status": "here"})
        await layer.presence_join("room", "conn.b!1", "bob")
        await self.diffs_until(layer, watcher, state, await layer.presence("room"))
        await layer.presence_join("room", "conn.a!1", "alice", {"status": "away"})
        await layer.presence_leave("room", "conn.b!1")
        expected = await layer.presence("room")
        assert expected == {"alice": {"conn.a!1": {"status": "away"}}}
        await self.diffs_until(layer, watcher, state, expected)
        await self.assert_nothing(layer, watcher)

    @layer_test(presence_period=0.5)
    async def test_presence_diffs_are_gathered(self, layer: BaseChannelLayer) -> None:
        """200 connections joining at once reach a member as a few diffs, not 200; their
        leaves too. A connection that joins and leaves within a period is never told."""
        self._needs_presence()
        watcher = await layer.new_channel()
        await layer.group_add("room", watcher)
        refs = [f"conn.x!{i}" for i in range(200)]
        await asyncio.gather(*(layer.presence_join("room", ref, ref[7:]) for ref in refs))
        await layer.presence_join("room", "conn.brief!1", "brief")
        await layer.presence_leave("room", "conn.brief!1")
        state: Presences = {}
        expected: Presences = {ref[7:]: {ref: {}} for ref in refs}
        assert await layer.presence("room") == expected
        joins = await self.diffs_until(layer, watcher, state, expected)
        assert len(joins) <= 3, f"200 joins took {len(joins)} diffs"
        await asyncio.gather(*(layer.presence_leave("room", ref) for ref in refs))
        leaves = await self.diffs_until(layer, watcher, state, {})
        assert len(leaves) <= 3, f"200 leaves took {len(leaves)} diffs"
        await self.assert_nothing(layer, watcher)
        told = {key for diff in joins + leaves for key in [*diff["joins"], *diff["leaves"]]}
        assert "brief" not in told and len(told) == 200

    @layer_test()
    async def test_presence_direct_diffs(self, layer: BaseChannelLayer) -> None:
        """notify="direct" sends each diff as a JSON text frame for the group's direct
        subscribers; such metadata must be JSON-serialisable."""
        self._needs_presence()
        watcher = await layer.new_channel()
        await layer.group_add("room", watcher)
        await layer.presence_join("room", "conn.a!1", "alice", {"name": "Alice"}, notify="direct")
        message = await layer.receive(watcher)
        assert message["type"] == DIRECT_MESSAGE_TYPE and message["group"] == "room"
        assert json.loads(message["text"]) == {
            "type": PRESENCE_DIFF_TYPE,
            "group": "room",
            "joins": {"alice": {"conn.a!1": {"name": "Alice"}}},
            "leaves": {},
        }
        try:
            await layer.presence_join("room", "conn.b!1", "bob", {"raw": b"\x00"}, notify="direct")
        except InvalidMessage:
            pass
        else:
            raise AssertionError("bytes in the metadata of a direct diff were accepted")
        assert list(await layer.presence("room")) == ["alice"]

    @layer_test(presence_period=0.05)
    async def test_presence_without_notices(self, layer: BaseChannelLayer) -> None:
        """notify=None changes presence without telling the group."""
        self._needs_presence()
        watcher = await layer.new_channel()
        await layer.group_add("room", watcher)
        await layer.presence_join("room", "conn.a!1", "alice", notify=None)
        assert list(await layer.presence("room")) == ["alice"]
        await layer.presence_leave("room", "conn.a!1")
        await self.assert_nothing(layer, watcher)

    @layer_test()
    async def test_presence_refuses_bad_input(self, layer: BaseChannelLayer) -> None:
        """Bad names, keys, metadata or notify modes are refused; nothing is stored."""
        self._needs_presence()
        bad: list[tuple[type[Exception], dict[str, Any]]] = [
            (InvalidName, {"group": "bad group"}),
            (InvalidName, {"ref": "bad ref"}),
            (InvalidMessage, {"key": ""}),
            (InvalidMessage, {"key": 7}),
            (InvalidMessage, {"key": "k" * 257}),
            (InvalidMessage, {"meta": ["not", "a", "dict"]}),
            (InvalidMessage, {"meta": {"when": object()}}),
            (InvalidMessage, {"meta": {"big": "x" * (2 * 1024 * 1024)}}),
            (InvalidMessage, {"notify": "loudly"}),
        ]
        for error, change in bad:
            call: dict[str, Any] = {"group": "room", "ref": "conn.a!1", "key": "alice"}
            call.update(change)
            notify = call.pop("notify", "message")
            try:
                await layer.presence_join(**call, notify=notify)
            except error:
                pass
            else:
                raise AssertionError(f"presence_join accepted {change!r}")
        assert await layer.presence("room") == {}

    def test_presence_lapses_without_heartbeats_and_comes_back(self) -> None:
        """A process whose heartbeats stop (dead, or stalled) has its presences lapse within
        ``presence_ttl``, and another process reports the leaves; once its heartbeats
        resume, its presences are back and their joins reported."""
        self._needs_presence()
        ttl = self.expiry_granularity * 2
        clock, clock_option = self._clock()

        async def lapsed(layer: BaseChannelLayer) -> None:
            if clock is not None:
                clock.advance(ttl * 1.5)
                return
            while True:
                if "ghost" not in await layer.presence("room"):
                    return
                await asyncio.sleep(ttl / 20)  # real time is under test here

        async def body(self: PresenceConformance, layer: BaseChannelLayer) -> None:
            shared = self.shared_between_instances
            stalled = self.another_layer(presence_ttl=ttl, **clock_option) if shared else layer
            watcher = await layer.new_channel()
            await layer.group_add("room", watcher)
            state: Presences = {}
            if shared:  # the survivor, who notices
                await layer.presence_join("room", "conn.live!1", "survivor")
            await stalled.presence_join("room", "conn.dead!1", "ghost", {"n": 1})
            expected = await layer.presence("room")
            assert "ghost" in expected
            await self.diffs_until(layer, watcher, state, expected)
            stalled.presence_tracker.heartbeats = False
            await lapsed(layer)
            assert "ghost" not in await layer.presence("room")
            if shared:
                await layer.presence_tracker.heartbeat()
                await self.diffs_until(layer, watcher, state, {"survivor": expected["survivor"]})
            stalled.presence_tracker.heartbeats = True
            await stalled.presence_tracker.heartbeat()
            assert await layer.presence("room") == expected
            await self.diffs_until(layer, watcher, state, expected)

        self.run(body, presence_ttl=ttl, **clock_option)

    @layer_test()
    async def test_presence_flush(self, layer: BaseChannelLayer) -> None:
        """flush() removes every presence, and the heartbeat does not bring them back."""
        self._needs_presence()
        await layer.presence_join("room", "conn.a!1", "alice")
        await layer.flush()
        assert await layer.presence("room") == {}
        await layer.presence_tracker.heartbeat()
        assert await layer.presence("room") == {}

    @layer_test()
    async def test_presence_shared_between_instances(self, layer: BaseChannelLayer) -> None:
        """Two layer instances (two processes) see each other's presences and diffs."""
        self._needs_presence()
        if not self.shared_between_instances:
            import pytest

            pytest.skip(f"{type(self).__name__}: instances of this backend share nothing")
        other = self.another_layer()
        watcher = await layer.new_channel()
        await layer.group_add("room", watcher)
        await other.presence_join("room", "conn.b!1", "bob", {"where": "other"})
        await layer.presence_join("room", "conn.a!1", "alice")
        expected: Presences = {"alice": {"conn.a!1": {}}, "bob": {"conn.b!1": {"where": "other"}}}
        assert await layer.presence("room") == await other.presence("room") == expected
        await self.diffs_until(layer, watcher, {}, expected)
