"""Presence on the layer: options, and a backend without presence saying so."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kanal.exceptions import ConfigError, PresenceNotSupported
from kanal.layers import BaseChannelLayer, InMemoryChannelLayer, Message, layer_from_url
from kanal.testing import ManualClock, apply_presence_diff


class _NoPresence(BaseChannelLayer):
    """A backend that stores nothing and keeps no presence (only the contract's methods)."""

    async def send(self, channel: str, message: Message) -> None:
        pass

    async def receive(self, channel: str) -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{prefix}.x!1"

    async def group_add(self, group: str, channel: str) -> None:
        pass

    async def group_discard(self, group: str, channel: str) -> None:
        pass

    async def group_send(self, group: str, message: Message) -> None:
        pass

    async def flush(self) -> None:
        pass


async def test_a_backend_without_presence_raises_a_clear_error() -> None:
    layer = _NoPresence()
    assert "presence" not in layer.extensions
    with pytest.raises(PresenceNotSupported, match="_NoPresence does not keep presence"):
        await layer.presence_join("room", "conn.a!1", "alice")
    with pytest.raises(NotImplementedError):  # what it also is
        await layer.presence("room")
    # Nothing kept for a heartbeat to renew.
    assert layer.presence_tracker._local == {}


def test_presence_options_from_the_url_and_checked() -> None:
    layer = layer_from_url("memory://?presence_ttl=5&presence_period=0.25")
    assert (layer.presence_ttl, layer.presence_period) == (5.0, 0.25)
    assert layer.presence_tracker.interval == pytest.approx(5 / 3)
    with pytest.raises(ConfigError, match="presence_ttl"):
        InMemoryChannelLayer(presence_ttl=0)
    with pytest.raises(ConfigError, match="presence_period"):
        layer_from_url("memory://?presence_period=-1")


async def test_the_heartbeat_ends_with_the_layer() -> None:
    layer = InMemoryChannelLayer(presence_ttl=0.3)
    await layer.presence_join("room", "conn.a!1", "alice")
    beat = layer.presence_tracker._beat
    assert beat is not None and not beat.done()
    await layer.close()
    await asyncio.wait([beat], timeout=5)
    assert beat.done()


async def test_one_heartbeat_restores_every_group() -> None:
    """Presences in 1,500 groups (more than one batch of renewals) lapse while heartbeats
    are off; the next heartbeat writes every one of them again."""
    clock = ManualClock(1000.0)
    layer = InMemoryChannelLayer(presence_ttl=10.0, clock=clock)
    try:
        layer.presence_tracker.heartbeats = False
        for i in range(1_500):
            await layer.presence_join(f"room{i}", f"conn.a!{i}", "alice", notify=None)
        clock.advance(15.0)
        assert await layer.presence("room0") == await layer.presence("room1499") == {}
        await layer.presence_tracker.heartbeat()
        for i in (0, 999, 1_000, 1_499):
            assert await layer.presence(f"room{i}") == {"alice": {f"conn.a!{i}": {}}}
    finally:
        await layer.close()


async def test_sync_code_reads_presence() -> None:
    """A sync view (any thread without a loop) reads who is present through layer.sync."""
    layer = InMemoryChannelLayer()
    try:
        await layer.presence_join("room", "conn.a!1", "alice", {"name": "Alice"})
        present = await asyncio.to_thread(layer.sync.presence, "room")
        assert present == {"alice": {"conn.a!1": {"name": "Alice"}}}
    finally:
        await layer.close()


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.integers(0, 5), st.integers(0, 2)),
        st.tuples(st.just("leave"), st.integers(0, 5), st.just(0)),
        st.tuples(st.just("wait"), st.just(0), st.just(0)),  # a period ends in between
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(_OPS)
def test_diffs_always_add_up_to_presence(ops: list[tuple[str, int, int]]) -> None:
    """Whatever joins, updates and leaves happen, within periods or across them, applying
    the diffs a member received, in order, gives what presence() says."""

    async def main() -> None:
        layer = InMemoryChannelLayer(presence_period=0.005)
        try:
            watcher = await layer.new_channel()
            await layer.group_add("room", watcher)
            for op, conn, meta in ops:
                if op == "join":
                    key = f"u{(conn + meta) % 3}"  # an update may change the key too
                    await layer.presence_join("room", f"c.x!{conn}", key, {"m": meta})
                elif op == "leave":
                    await layer.presence_leave("room", f"c.x!{conn}")
                else:
                    await asyncio.sleep(0.006)
            # The last change: once its diff is in, every diff before it is too.
            await layer.presence_join("room", "c.marker!1", "marker")
            expected = await layer.presence("room")
            state: dict[str, Any] = {}
            async with asyncio.timeout(10):
                while state != expected:
                    apply_presence_diff(state, await layer.receive(watcher))
        finally:
            await layer.close()

    asyncio.run(main())
