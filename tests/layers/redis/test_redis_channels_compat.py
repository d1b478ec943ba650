"""kanal's Redis layer as the BACKEND of an unchanged Django Channels project."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from kanal.testing import RedisServer

pytestmark = pytest.mark.redis


@pytest.mark.usefixtures("django_settings")
async def test_channels_consumers_broadcast_through_redis_layer(
    redis_server: RedisServer,
) -> None:
    """Channels consumers, a group broadcast, channels_redis-style CONFIG keys."""
    from channels.generic.websocket import AsyncJsonWebsocketConsumer
    from channels.layers import channel_layers, get_channel_layer
    from channels.testing import WebsocketCommunicator
    from django.test import override_settings

    from kanal.layers.redis import RedisChannelLayer

    class Room(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
        groups = ["lobby"]

        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            await self.channel_layer.group_send(
                "lobby", {"type": "chat.message", "text": content["text"]}
            )

        async def chat_message(self, event: dict[str, Any]) -> None:
            await self.send_json({"text": event["text"], "to": self.channel_name})

    config = {
        "default": {
            "BACKEND": "kanal.layers.redis.RedisChannelLayer",
            "CONFIG": {
                # The keys and value shapes a channels_redis project already has.
                "hosts": [(redis_server.host, redis_server.port)],
                "prefix": "django",
                "capacity": 50,
                "expiry": 30,
                "group_expiry": 600,
                "channel_capacity": {"http.request": 200},
                "symmetric_encryption_keys": ["a secret of the project"],
            },
        }
    }
    raw = Redis(host=redis_server.host, port=redis_server.port)
    with override_settings(CHANNEL_LAYERS=config):
        channel_layers.backends.clear()
        layer = get_channel_layer()
        try:
            assert isinstance(layer, RedisChannelLayer)
            assert layer.capacity == 50 and layer.get_capacity("http.request") == 200
            assert layer.prefix == "django"
            alice = WebsocketCommunicator(Room.as_asgi(), "/ws/")
            bob = WebsocketCommunicator(Room.as_asgi(), "/ws/")
            assert (await alice.connect())[0]
            assert (await bob.connect())[0]
            members = await raw.zrange("django:g:lobby", 0, -1)
            assert len(members) == 2
            await alice.send_json_to({"text": "hello"})
            got_bob = await bob.receive_json_from(timeout=5)
            got_alice = await alice.receive_json_from(timeout=5)
            assert got_bob["text"] == got_alice["text"] == "hello"
            assert got_bob["to"] != got_alice["to"]
            assert layer.stats().groups["lobby"].delivered == 2
            await alice.disconnect()
            await bob.disconnect()
            # Channels discards the consumers' memberships on disconnect.
            assert await raw.zcard("django:g:lobby") == 0
        finally:
            await layer.flush()
            await layer.close()
            await raw.aclose()
            channel_layers.backends.clear()


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
