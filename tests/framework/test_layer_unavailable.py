"""A handler whose layer is unavailable: the connection stays, the hook tells the client."""

from __future__ import annotations

from typing import Any

import pytest

from kanal.consumers import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer
from kanal.exceptions import LayerUnavailable
from kanal.layers import InMemoryChannelLayer
from kanal.testing import WebsocketCommunicator


class DownLayer(InMemoryChannelLayer):
    """A memory layer whose group_send fails as a Redis layer's does past its bound."""

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        raise LayerUnavailable("Redis at test:6379/0 was unreachable for more than 5 s")


class Room(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        assert self.channel_layer is not None
        await self.channel_layer.group_send("room", {"type": "x"})

    async def on_layer_unavailable(self, exc: LayerUnavailable, message: Any) -> None:
        await self.send_json({"kind": "unavailable"})


class SyncRoom(JsonWebsocketConsumer):
    def connect(self) -> None:
        self.accept()

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        from asgiref.sync import async_to_sync

        assert self.channel_layer is not None
        async_to_sync(self.channel_layer.group_send)("room", {"type": "x"})


@pytest.mark.parametrize("consumer", [Room, SyncRoom])
async def test_layer_unavailable_in_a_handler_keeps_the_connection(
    consumer: type[Room] | type[SyncRoom], caplog: pytest.LogCaptureFixture
) -> None:
    communicator = WebsocketCommunicator(consumer.as_asgi(channel_layer=DownLayer()), "/ws/")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"text": "hello"})
    if consumer is Room:
        assert await communicator.receive_json_from() == {"kind": "unavailable"}
    # Not closed: the connection still answers (the next line fails the same way).
    assert await communicator.receive_nothing()
    await communicator.send_json_to({"text": "again"})
    if consumer is Room:
        assert await communicator.receive_json_from() == {"kind": "unavailable"}
    assert await communicator.receive_nothing()
    assert "the connection stays open" in caplog.text
    await communicator.disconnect()


class JoinsDown(AsyncJsonWebsocketConsumer):
    groups = ["room"]

    async def connect(self) -> None:
        await self.accept()


async def test_layer_unavailable_during_the_handshake_refuses_it() -> None:
    class Layer(InMemoryChannelLayer):
        async def group_add(self, group: str, channel: str) -> None:
            raise LayerUnavailable("down")

    communicator = WebsocketCommunicator(JoinsDown.as_asgi(channel_layer=Layer()), "/ws/")
    connected, _ = await communicator.connect()
    assert not connected
