"""channels_redis idioms that kanal's Redis layer accepts as channels_redis does."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from kanal.testing import RedisServer

pytestmark = pytest.mark.redis


async def test_close_pools_disconnects_and_the_layer_stays_usable(
    redis_server: RedisServer,
) -> None:
    from kanal.layers.redis import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="closepools")
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "one"})
    assert (await layer.receive(channel))["type"] == "one"
    await layer.close_pools()  # channels_redis's idiom at the end of a task
    assert not layer.closed
    await layer.send("jobs", {"type": "two"})
    assert (await layer.receive("jobs"))["type"] == "two"
    await layer.close()


def test_sentinel_hosts_that_differ_only_by_database_are_two_hosts() -> None:
    from kanal.layers.redis._connection import parse_hosts

    as_dicts = parse_hosts(
        [
            {"sentinels": [("s1", 26379)], "master_name": "mymaster", "db": 0},
            {"sentinels": [("s1", 26379)], "master_name": "mymaster", "db": 1},
        ]
    )
    as_urls = parse_hosts(
        ["redis+sentinel://s1:26379/mymaster/0", "redis+sentinel://s1:26379/mymaster/1"]
    )
    for specs in (as_dicts, as_urls):
        assert [spec.kwargs["db"] for spec in specs] == [0, 1]
        assert specs[0].name == "sentinel:mymaster"  # database 0: the name it always had


async def test_flush_by_another_instance_is_not_taken_for_a_data_loss(
    redis_server: RedisServer,
) -> None:
    """The marker a process uses to tell a Redis restart survives another one's flush."""
    from kanal.layers.redis import RedisChannelLayer

    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    member = RedisChannelLayer(hosts=[url], prefix="flushwarn")
    flusher = RedisChannelLayer(hosts=[url], prefix="flushwarn")
    channel = await member.new_channel()
    await member.group_add("room", channel)
    await member.send(channel, {"type": "hello"})
    assert (await member.receive(channel))["type"] == "hello"  # its drain runs: marker set
    client = Redis.from_url(url)
    try:
        markers = [key async for key in client.scan_iter(match="flushwarn*:alive:*")]
        assert markers
        await flusher.flush()
        assert [key async for key in client.scan_iter(match="flushwarn*:g:*")] == []
        for marker in markers:
            assert await client.exists(marker)
    finally:
        await client.aclose()
    await member.close()
    await flusher.close()
