"""Presence on Redis beyond the conformance suite: a process killed for real, the keys'
expiry, one round trip per update, a Redis that lost its data."""

from __future__ import annotations

import signal
import textwrap
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from tests.child_process import child_process

from kanal.exceptions import LayerUnavailable
from kanal.layers.redis import RedisChannelLayer
from kanal.testing import RedisServer, apply_presence_diff

pytestmark = pytest.mark.redis

# A process that makes three presences in "room" and then only heartbeats them.
_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from kanal.layers.redis import RedisChannelLayer

    async def main():
        layer = RedisChannelLayer(hosts=[sys.argv[1]], prefix="kill", presence_ttl=1.0)
        for i in range(3):
            await layer.presence_join("room", f"conn.child!{i}", f"user{i}", {"i": i})
        print("joined", flush=True, file=sys.stderr)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def _diff(layer: RedisChannelLayer, channel: str, within: float) -> dict[str, Any]:
    import asyncio

    async with asyncio.timeout(within):
        message = await layer.receive(channel)
    assert message["type"] == "presence.diff"
    return message


async def test_killed_process_presences_leave_within_the_bound(redis_server: RedisServer) -> None:
    """kill -9 of a process with presences: they are gone from presence() within
    presence_ttl, and a surviving process reports their leaves within ttl + ttl/3 + the
    broadcast period (plus the machine's slack)."""
    ttl = 1.0
    survivor = RedisChannelLayer(hosts=[redis_server.url], prefix="kill", presence_ttl=ttl)
    try:
        await survivor.flush()
        watcher = await survivor.new_channel()
        await survivor.group_add("room", watcher)
        await survivor.presence_join("room", "conn.live!1", "survivor")
        state: dict[str, Any] = {}
        async with child_process("-c", _CHILD, redis_server.url) as child:
            await child.wait_for("joined")
            present = await survivor.presence("room")
            assert set(present) == {"survivor", "user0", "user1", "user2"}
            while state != present:
                apply_presence_diff(state, await _diff(survivor, watcher, 10))
            child.process.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await child.process.wait()
            while set(state) != {"survivor"}:
                # The bound, with room for a loaded machine; what matters is that it ends.
                apply_presence_diff(state, await _diff(survivor, watcher, ttl * 4 / 3 + 0.1 + 5))
            took = time.monotonic() - killed_at
        assert await survivor.presence("room") == {"survivor": {"conn.live!1": {}}}
        assert took < ttl * 4 / 3 + 0.1 + 5, took
    finally:
        await survivor.flush()
        await survivor.close()


async def test_presence_keys_expire_and_go(redis_server: RedisServer) -> None:
    """Both keys of a group's presence carry a TTL of at most presence_ttl (memory stays
    bounded if every process dies), and vanish with the last leave."""
    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="pkeys", presence_ttl=2.0)
    client = Redis.from_url(redis_server.url)
    try:
        await layer.flush()
        await layer.presence_join("room", "conn.a!1", "alice", {"x": 1})
        for key in ("pkeys:pz:room", "pkeys:pm:room"):
            assert 0 < await client.pttl(key) <= 2000
        await layer.presence_leave("room", "conn.a!1")
        assert await client.exists("pkeys:pz:room", "pkeys:pm:room") == 0
    finally:
        await client.aclose()
        await layer.flush()
        await layer.close()


async def test_one_round_trip_per_update(redis_server: RedisServer) -> None:
    """A join, a leave and a heartbeat are each one script call (one round trip)."""
    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="trips", presence_ttl=30.0)
    client = Redis.from_url(redis_server.url)

    async def calls() -> int:
        stats = await client.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    try:
        await layer.flush()
        await layer.presence_join("room", "conn.warm!1", "warm")  # loads the scripts
        before = await calls()
        await layer.presence_join("room", "conn.a!1", "alice")
        await layer.presence_leave("room", "conn.a!1")
        await layer.presence_tracker.heartbeat()
        assert await calls() - before == 3
    finally:
        await client.aclose()
        await layer.flush()
        await layer.close()


async def test_presences_come_back_after_redis_lost_them(private_redis: RedisServer) -> None:
    """Redis restarted empty: the next heartbeat writes this process's presences again and
    reports their joins."""
    layer = RedisChannelLayer(hosts=[private_redis.url], presence_ttl=30.0, timeout=2.0)
    try:
        await layer.presence_join("room", "conn.a!1", "alice", {"name": "Alice"})
        private_redis.restart()
        watcher = await layer.new_channel()
        await layer.group_add("room", watcher)
        assert await layer.presence("room") == {}
        await layer.presence_tracker.heartbeat()
        assert await layer.presence("room") == {"alice": {"conn.a!1": {"name": "Alice"}}}
        diff = await _diff(layer, watcher, 10)
        assert diff["joins"] == {"alice": {"conn.a!1": {"name": "Alice"}}}
    finally:
        await layer.close()


async def test_a_join_during_an_outage_is_kept_and_written_when_redis_is_back(
    private_redis: RedisServer,
) -> None:
    """Redis unreachable: the join raises LayerUnavailable, the layer keeps it, and the
    heartbeat after Redis is back writes it and reports the join."""
    layer = RedisChannelLayer(
        hosts=[private_redis.url], presence_ttl=30.0, timeout=1.0, outage_timeout=0
    )
    try:
        watcher = await layer.new_channel()
        await layer.group_add("room", watcher)
        private_redis.kill()
        with pytest.raises(LayerUnavailable):
            await layer.presence_join("room", "conn.a!1", "alice")
        private_redis.restart()
        await layer.group_add("room", watcher)  # the restarted Redis lost the membership
        await layer.presence_tracker.heartbeat()
        assert await layer.presence("room") == {"alice": {"conn.a!1": {}}}
        diff = await _diff(layer, watcher, 10)
        assert diff["joins"] == {"alice": {"conn.a!1": {}}}
    finally:
        await layer.close()
