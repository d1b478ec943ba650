"""The decoupled mode: a real server forwards connections to bridge workers via the layer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from kanal.bridge import BridgeApp, BridgeWorker, scope_from_wire, scope_to_wire
from kanal.consumers import AsyncWebsocketConsumer
from kanal.layers import InMemoryChannelLayer
from kanal.routing import ProtocolTypeRouter
from kanal.server import Config, Server


def make_app(layer: InMemoryChannelLayer) -> Any:
    class Echo(AsyncWebsocketConsumer):
        channel_layer = layer
        groups = ["everyone"]

        async def connect(self) -> None:
            await self.accept()

        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            if text_data == "broadcast":
                await self.channel_layer.group_send("everyone", {"type": "shout", "text": "hi all"})
            else:
                await self.send(text_data=f"echo:{text_data}")

        async def shout(self, message: dict[str, Any]) -> None:
            await self.send(text_data=message["text"])

    async def http(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        answer = f"{scope['method']} {scope['path']} {len(body)}".encode()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"x-worker", b"yes")]}
        )
        await send({"type": "http.response.body", "body": answer})

    return ProtocolTypeRouter({"websocket": Echo.as_asgi(), "http": http})


@pytest.fixture
async def layer() -> AsyncIterator[InMemoryChannelLayer]:
    layer = InMemoryChannelLayer(capacity=1000)
    yield layer
    await layer.close()


@pytest.fixture
async def server(layer: InMemoryChannelLayer) -> AsyncIterator[Server]:
    server = Server(Config(app=BridgeApp(layer, attach_timeout=0.5), port=0, lifespan="off"))
    await server.start()
    yield server
    await server.shutdown()


async def start_worker(layer: InMemoryChannelLayer) -> tuple[BridgeWorker, asyncio.Task[None]]:
    worker = BridgeWorker(make_app(layer), layer=layer, shutdown_timeout=5)
    task = asyncio.create_task(worker.run())
    await worker.started()
    return worker, task


async def test_http_and_websocket_through_workers(
    server: Server, layer: InMemoryChannelLayer
) -> None:
    worker, task = await start_worker(layer)
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{base}/upload", content=b"x" * 700_000)
        assert response.status_code == 200
        assert response.text == "POST /upload 700000"
        assert response.headers["x-worker"] == "yes"
    async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        for i in range(20):
            await ws.send(f"m{i}")
        assert [await ws.recv() for _ in range(20)] == [f"echo:m{i}" for i in range(20)]
    worker.stop()
    await task
    assert worker.served == 2


async def test_worker_restart_keeps_websockets_open(
    server: Server, layer: InMemoryChannelLayer
) -> None:
    first, first_task = await start_worker(layer)
    async with (
        connect(f"ws://127.0.0.1:{server.port}/ws") as a,
        connect(f"ws://127.0.0.1:{server.port}/ws") as b,
    ):
        await a.send("before")
        assert await a.recv() == "echo:before"
        await b.send("before")
        assert await b.recv() == "echo:before"
        first.stop()
        await first_task
        assert first.handed_over == 2
        # No worker now: the client's messages wait in the layer, in order.
        await a.send("during-1")
        await a.send("during-2")
        second, second_task = await start_worker(layer)
        async with asyncio.timeout(5):
            assert await a.recv() == "echo:during-1"
            assert await a.recv() == "echo:during-2"
            await b.send("after")
            assert await b.recv() == "echo:after"
            # The new instances joined the group again: a broadcast reaches both, once.
            await a.send("broadcast")
            assert await a.recv() == "hi all"
            assert await b.recv() == "hi all"
        assert second.resumed == 2
    second.stop()
    await second_task


async def test_no_worker_means_503_and_a_denied_handshake(server: Server) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/")
    assert response.status_code == 503
    with pytest.raises(Exception) as info:
        async with connect(f"ws://127.0.0.1:{server.port}/ws"):
            pass
    assert "403" in str(info.value) or "HTTP" in str(info.value)


def test_scope_survives_the_wire() -> None:
    scope = {
        "type": "http",
        "headers": [(b"host", b"x"), (b"cookie", b"a=b")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {"db": object()},
        "path": "/p",
        "query_string": b"q=1",
        "extensions": {"http.response.trailers": {}},
    }
    back = scope_from_wire(scope_to_wire(scope))
    assert back["headers"] == [(b"host", b"x"), (b"cookie", b"a=b")]
    assert back["client"] == ("127.0.0.1", 5000)
    assert back["state"] == {}
    assert back["path"] == "/p" and back["query_string"] == b"q=1"
