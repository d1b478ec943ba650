"""The consumer API of direct delivery: subscribe_direct() and group_send_direct()."""

from __future__ import annotations

import asyncio
from typing import Any

import websockets

from kanal.consumers import AsyncWebsocketConsumer, WebsocketConsumer
from kanal.layers import DirectGroupTransport, InMemoryChannelLayer
from kanal.testing import LiveServer, WebsocketCommunicator


class Room(AsyncWebsocketConsumer):
    """Subscribes to the room directly; what a client sends is broadcast to all."""

    woken = 0

    async def connect(self) -> None:
        await self.accept()
        await self.subscribe_direct("room")
        await self.send(text_data="in")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.group_send_direct("room", text_data=text_data)

    async def chat_message(self, event: dict[str, Any]) -> None:  # an ordinary handler
        type(self).woken += 1
        await self.send(text_data="handler: " + event["text"])


class SyncRoom(WebsocketConsumer):
    def connect(self) -> None:
        self.accept()
        self.subscribe_direct("room")
        self.send(text_data="in")

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.group_send_direct("room", bytes_data=(text_data or "").encode())


async def test_consumers_subscribe_at_the_server_and_are_not_woken_by_broadcasts(
    live_server: Any,
) -> None:
    layer = InMemoryChannelLayer()
    try:
        server: LiveServer = await live_server(
            Room.as_asgi(channel_layer=layer),
            direct_groups=lambda deliver: DirectGroupTransport(deliver, layer),
        )
        clients = [await websockets.connect(server.ws_url + "/") for _ in range(3)]
        for client in clients:
            assert await asyncio.wait_for(client.recv(), 5) == "in"
        await clients[0].send("hello")
        for client in clients:
            assert await asyncio.wait_for(client.recv(), 5) == "hello"
        # Written by the server: the group has one member (the process), not three.
        assert layer.stats().groups["room"].delivered == 1
        for client in clients:
            await client.close()
    finally:
        await layer.close()


async def test_sync_consumers_too(live_server: Any) -> None:
    layer = InMemoryChannelLayer()
    try:
        server: LiveServer = await live_server(
            SyncRoom.as_asgi(channel_layer=layer),
            direct_groups=lambda deliver: DirectGroupTransport(deliver, layer),
        )
        async with (
            websockets.connect(server.ws_url + "/") as one,
            websockets.connect(server.ws_url + "/") as two,
        ):
            assert await asyncio.wait_for(one.recv(), 5) == "in"
            assert await asyncio.wait_for(two.recv(), 5) == "in"
            await two.send("bin")
            assert await asyncio.wait_for(one.recv(), 5) == b"bin"
            assert await asyncio.wait_for(two.recv(), 5) == b"bin"
    finally:
        await layer.close()


async def test_without_the_server_extension_the_consumer_delivers_itself() -> None:
    layer = InMemoryChannelLayer()
    try:
        first = WebsocketCommunicator(Room.as_asgi(channel_layer=layer), "/")
        second = WebsocketCommunicator(Room.as_asgi(channel_layer=layer), "/")
        for communicator in (first, second):
            connected, _ = await communicator.connect()
            assert connected
            assert await communicator.receive_from() == "in"
        await first.send_to(text_data="hi")
        assert await first.receive_from() == "hi"
        assert await second.receive_from() == "hi"
        # Ordinary group messages still reach the consumers' handlers.
        await layer.group_send("room", {"type": "chat.message", "text": "plain"})
        assert await second.receive_from() == "handler: plain"
        await first.disconnect()
        await second.disconnect()
    finally:
        await layer.close()
