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
