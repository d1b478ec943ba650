"""kanal's in-memory layer as the BACKEND of an unchanged Django Channels project."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.usefixtures("django_settings")
async def test_channels_consumers_broadcast_through_kanal_layer() -> None:
    from channels.generic.websocket import AsyncJsonWebsocketConsumer
    from channels.layers import channel_layers, get_channel_layer
    from channels.testing import WebsocketCommunicator
    from django.test import override_settings

    import kanal.layers

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
            "BACKEND": "kanal.layers.InMemoryChannelLayer",
            "CONFIG": {
                "capacity": 50,
                "expiry": 30,
                "group_expiry": 600,
                "channel_capacity": {"http.request": 200},
            },
        }
    }
    with override_settings(CHANNEL_LAYERS=config):
        channel_layers.backends.clear()
        layer = get_channel_layer()
        assert isinstance(layer, kanal.layers.InMemoryChannelLayer)
        assert layer.capacity == 50 and layer.get_capacity("http.request") == 200
        alice = WebsocketCommunicator(Room.as_asgi(), "/ws/")
        bob = WebsocketCommunicator(Room.as_asgi(), "/ws/")
        assert (await alice.connect())[0]
        assert (await bob.connect())[0]
        await alice.send_json_to({"text": "hello"})
        got_bob = await bob.receive_json_from(timeout=5)
        got_alice = await alice.receive_json_from(timeout=5)
        assert got_bob["text"] == got_alice["text"] == "hello"
        assert got_bob["to"] != got_alice["to"]
        assert layer.stats().groups["lobby"].delivered == 2
        await alice.disconnect()
        await bob.disconnect()
        channel_layers.backends.clear()


async def test_channels_full_catches_kanals() -> None:
    import channels.exceptions

    import kanal.layers

    layer = kanal.layers.InMemoryChannelLayer(capacity=1, max_message_size=1024)
    await layer.send("jobs", {"type": "a"})
    with pytest.raises(channels.exceptions.ChannelFull) as caught:
        await layer.send("jobs", {"type": "b"})
    assert isinstance(caught.value, kanal.layers.ChannelFull)  # still kanal's, and a LayerError
    with pytest.raises(channels.exceptions.MessageTooLarge):
        await layer.send("jobs", {"type": "big", "data": b"x" * 2048})
    await layer.close()


def test_channels_43_validator_names_on_the_layer() -> None:
    import kanal.layers

    layer = kanal.layers.InMemoryChannelLayer()
    assert layer.require_valid_channel_name("specific.abc!def") is True
    assert layer.require_valid_group_name("room.lobby") is True
    with pytest.raises(TypeError):
        layer.require_valid_channel_name("no spaces")
    with pytest.raises(TypeError):
        layer.require_valid_group_name("no!bang")
