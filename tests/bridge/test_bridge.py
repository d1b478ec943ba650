"""The decoupled mode: a real server forwards connections to bridge workers via the layer."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from tests.bridge.conftest import StartWorker
from websockets.asyncio.client import connect

from kanal.bridge import BridgeApp, scope_from_wire, scope_to_wire
from kanal.layers import InMemoryChannelLayer
from kanal.testing import LiveServer
from kanal.typing import Message


async def test_http_and_websocket_through_workers(
    server: LiveServer, start_worker: StartWorker
) -> None:
    worker, task = await start_worker()
    base = f"{server.url}"
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{base}/upload", content=b"x" * 700_000)
        assert response.status_code == 200
        assert response.text == "POST /upload 700000"
        assert response.headers["x-worker"] == "yes"
    async with connect(f"{server.ws_url}/ws") as ws:
        for i in range(20):
            await ws.send(f"m{i}")
        assert [await ws.recv() for _ in range(20)] == [f"echo:m{i}" for i in range(20)]
    worker.stop()
    await task
    assert worker.served == 2


async def test_worker_restart_keeps_websockets_open(
    server: LiveServer, start_worker: StartWorker
) -> None:
    first, first_task = await start_worker()
    async with (
        connect(f"{server.ws_url}/ws") as a,
        connect(f"{server.ws_url}/ws") as b,
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
        second, second_task = await start_worker()
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


async def test_no_worker_means_503_and_a_denied_handshake(server: LiveServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}/")
    assert response.status_code == 503
    with pytest.raises(Exception) as info:
        async with connect(f"{server.ws_url}/ws"):
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


async def test_the_bridge_acknowledges_lifespan(layer: InMemoryChannelLayer) -> None:
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    answers: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0)

    async def send(message: Message) -> None:
        answers.append(message)

    async with asyncio.timeout(5):
        await BridgeApp(layer)({"type": "lifespan"}, receive, send)
    assert [a["type"] for a in answers] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
