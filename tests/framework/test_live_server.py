"""The live-server fixture: a real socket, a real WebSocket client, the shared layer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import websockets

from kanal.consumers import AsyncHttpConsumer, AsyncSseConsumer, AsyncWebsocketConsumer
from kanal.layers import BaseChannelLayer
from kanal.routing import ProtocolTypeRouter, URLRouter, path
from kanal.testing import LiveServer


class Shout(AsyncWebsocketConsumer):
    groups = ["shout"]

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert self.channel_layer is not None
        await self.channel_layer.group_send("shout", {"type": "shout", "text": text_data})

    async def shout(self, event: dict[str, Any]) -> None:
        await self.send(text_data=str(event["text"]).upper())


class Ping(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.send_response(200, b"pong")


class News(AsyncSseConsumer):
    groups = ["news"]

    async def news_item(self, event: dict[str, Any]) -> None:
        await self.send_event(event["text"], event="news")


application = ProtocolTypeRouter(
    {
        "http": URLRouter([path("ping/", Ping.as_asgi()), path("news/", News.as_asgi())]),
        "websocket": URLRouter([path("ws/", Shout.as_asgi())]),
    }
)


async def test_live_server_serves_http_and_websockets_through_the_shared_layer(
    live_server: Callable[..., Awaitable[LiveServer]],
    default_channel_layer: BaseChannelLayer,
) -> None:
    server = await live_server(application)
    async with httpx.AsyncClient() as client:
        response = await client.get(server.url + "/ping/")
        assert response.status_code == 200 and response.text == "pong"
        assert (await client.get(server.url + "/nowhere/")).status_code == 404
    async with (
        websockets.connect(server.ws_url + "/ws/") as first,
        websockets.connect(server.ws_url + "/ws/") as second,
    ):
        await first.send("hello")
        assert await second.recv() == "HELLO"
        assert await first.recv() == "HELLO"
    assert default_channel_layer.stats().groups["shout"].delivered == 2


async def test_routes_work_under_a_root_path(
    live_server: Callable[..., Awaitable[LiveServer]],
    default_channel_layer: BaseChannelLayer,
) -> None:
    server = await live_server(application, root_path="/chat")
    async with httpx.AsyncClient() as client:
        response = await client.get(server.url + "/ping/")
    assert response.status_code == 200 and response.text == "pong"


async def test_server_sent_events_stream_through_the_server(
    live_server: Callable[..., Awaitable[LiveServer]],
    default_channel_layer: BaseChannelLayer,
) -> None:
    server = await live_server(application)
    async with (
        httpx.AsyncClient() as client,
        client.stream("GET", server.url + "/news/") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        assert await anext(lines) == ": stream open"
        await default_channel_layer.group_send("news", {"type": "news.item", "text": "hot"})
        received = []
        while (line := await anext(lines)) != "data: hot":
            received.append(line)
        assert "event: news" in received
