"""Group history on Redis beyond the conformance suite: the stream's bounds in Redis
itself, and history over several shards."""

from __future__ import annotations

import redis.asyncio as redis_client

from kanal.layers import Position, position_of
from kanal.layers.redis import RedisChannelLayer
from kanal.testing import RedisServer

HISTORY = {"room.*": {"size": 5, "ttl": 30}}


async def test_the_stream_is_capped_and_expires_in_redis(redis_server: RedisServer) -> None:
    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="history-keys", history=HISTORY)
    client = redis_client.Redis.from_url(redis_server.url)
    try:
        await layer.flush()
        for n in range(12):
            await layer.group_send("room.a", {"type": "line", "n": n})
        assert await client.xlen("history-keys:h:room.a") == 5
        first = await client.xrange("history-keys:h:room.a", count=1)
        assert first[0][0] == b"8-0"  # the entry id is the offset: 8..12 are kept
        assert 0 < await client.pttl("history-keys:h:room.a") <= 30_000
        assert await client.pttl("history-keys:hm:room.a") > 30_000  # the epoch outlives it
        # Nothing is kept for a group without history.
        await layer.group_send("plain", {"type": "line"})
        assert not await client.exists("history-keys:h:plain", "history-keys:hm:plain")
    finally:
        await layer.flush()
        await layer.close()
        await client.aclose()


async def test_history_over_several_shards() -> None:
    # Members of processes on both shards get the same positions; the history lives on
    # the group's shard alone.
    with RedisServer() as one, RedisServer() as two:
        layers = [
            RedisChannelLayer(hosts=[one.url, two.url], prefix="shards", history=HISTORY)
            for _ in range(6)
        ]
        try:
            members = []
            for layer in layers:
                channel = await layer.new_channel()
                await layer.group_add("room.b", channel)
                members.append((layer, channel))
            for n in range(3):
                await layers[n].group_send("room.b", {"type": "line", "n": n})
            positions = set()
            for layer, channel in members:
                got = [await layer.receive(channel) for _ in range(3)]
                assert [m["n"] for m in got] == [0, 1, 2]
                positions.add(tuple(str(position_of(m)) for m in got))
            assert len(positions) == 1  # every member saw the same positions
            kept = await layers[5].group_history("room.b", since=Position.parse(min(positions)[0]))
            assert [m["n"] for m in kept.messages] == [1, 2]
        finally:
            for layer in layers:
                await layer.close()


async def test_entries_past_the_ttl_leave_the_stream(redis_server: RedisServer) -> None:
    import asyncio

    ttl = 0.5
    layer = RedisChannelLayer(
        hosts=[redis_server.url], prefix="history-ttl", history={"room.*": {"size": 50, "ttl": ttl}}
    )
    client = redis_client.Redis.from_url(redis_server.url)
    try:
        await layer.flush()
        for n in range(7):
            await layer.group_send("room.c", {"type": "line", "n": n})
        assert await client.xlen("history-ttl:h:room.c") == 7
        # Real time is under test: Redis's clock ages the entries, not one of ours.
        await asyncio.sleep(ttl * 1.5)
        for n in range(7, 9):  # the 8th publish looks at the head and trims what aged
            await layer.group_send("room.c", {"type": "line", "n": n})
        entries = await client.xrange("history-ttl:h:room.c")
        assert [entry[0] for entry in entries] == [b"8-0", b"9-0"]
        assert [m["n"] for m in (await layer.group_history("room.c")).messages] == [7, 8]
    finally:
        await layer.flush()
        await layer.close()
        await client.aclose()
