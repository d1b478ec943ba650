"""Each way a bridged connection can fail, and what the client (or the worker) sees."""

from __future__ import annotations

import asyncio
import logging
import os

import httpx
import pytest
from tests.bridge.apps import make_app, whole_body
from tests.bridge.conftest import StartServer, StartWorker
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from kanal.bridge import BRIDGE_CHANNEL, BridgeWorker, MessageType, scope_to_wire
from kanal.bridge._messages import (
    attached_message,
    batch_message,
    open_message,
    send_message,
    unbatch,
)
from kanal.bridge._transport import CHUNK_SIZE
from kanal.exceptions import MessageTooLarge
from kanal.layers import InMemoryChannelLayer
from kanal.testing import LiveServer


async def closed_with(ws: ClientConnection, within: float = 5) -> int:
    """The close code the server sent (waiting up to ``within`` seconds for the close)."""
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    assert info.value.rcvd is not None, "the connection ended without a close frame"
    return info.value.rcvd.code


async def test_events_beyond_the_hold_close_the_websocket_with_1013(
    start_server: StartServer, start_worker: StartWorker
) -> None:
    server = await start_server(max_held=3)
    worker, task = await start_worker()
    async with connect(f"{server.ws_url}/ws") as ws:
        await ws.send("before")
        assert await ws.recv() == "echo:before"
        worker.stop()
        await task  # returns once the server has acknowledged the detach: it holds now
        assert worker.handed_over == 1
        # No next worker: three events are held, the fourth is one too many.
        for i in range(4):
            await ws.send(f"held-{i}")
        assert await closed_with(ws) == 1013


async def test_an_http_application_error_is_a_500(
    server: LiveServer, start_worker: StartWorker
) -> None:
    await start_worker()
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}/boom")
        assert response.status_code == 500
        assert response.text == "Internal Server Error\n"
        # Only that request failed: the next one is served.
        assert (await client.get(f"{server.url}/fine")).status_code == 200


async def test_a_websocket_application_error_closes_with_1011(
    server: LiveServer, start_worker: StartWorker
) -> None:
    await start_worker()
    async with connect(f"{server.ws_url}/boom") as ws:
        await ws.send("this fails")
        assert await closed_with(ws) == 1011


async def test_large_bodies_cross_in_chunks_and_arrive_whole(
    start_server: StartServer, start_worker: StartWorker, layer: InMemoryChannelLayer
) -> None:
    body = os.urandom(3 * 1024 * 1024 + 5)
    with pytest.raises(MessageTooLarge):  # whole, it could not cross the layer at all
        await layer.send("too-large", {"type": "http.request", "body": body})
    # The buffering middleware hands the bridge the body as one event, so that the bridge
    # itself must split it (a server reading the socket would already deliver it in parts).
    server = await start_server(wrap=whole_body)
    await start_worker()
    async with httpx.AsyncClient(timeout=20) as client:
        response = await client.post(f"{server.url}/echo", content=body)
    assert response.status_code == 200
    # The request arrived at the application in chunks of the bridge's size, in order...
    assert int(response.headers["x-parts"]) == -(-len(body) // CHUNK_SIZE)
    assert int(response.headers["x-largest-part"]) == CHUNK_SIZE
    # ...and the response, one body event at the worker, reached the client whole.
    assert response.content == body


async def test_a_detach_nobody_acknowledges_is_given_up(
    layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    # The test plays a server that vanished after announcing a WebSocket connection.
    worker = BridgeWorker(make_app(layer), layer=layer, shutdown_timeout=5, detach_timeout=0.05)
    task = asyncio.create_task(worker.run())
    await worker.started()
    reply = await layer.new_channel("bridge")
    scope = {"type": "websocket", "path": "/ws", "headers": [], "subprotocols": []}
    events = [{"type": "websocket.connect"}]
    await layer.send(
        BRIDGE_CHANNEL, open_message("c0ffee", reply, "", scope_to_wire(scope), events)
    )
    seen: list[str] = []
    async with asyncio.timeout(5):
        while "websocket.accept" not in seen:
            for item in unbatch(await layer.receive(reply)):
                seen.append(item["type"])
                if item["type"] == MessageType.SEND:
                    seen.append(item["event"]["type"])
        assert seen[0] == MessageType.ATTACHED
        worker.stop()
        assert (await layer.receive(reply))["type"] == MessageType.DETACH
        with caplog.at_level(logging.WARNING, logger="kanal.bridge"):
            await task  # no acknowledgement comes: the worker gives up after detach_timeout
    assert worker.handed_over == 0
    assert "did not acknowledge the handover" in caplog.text
    # Nothing was announced again for a next worker: the only announcement is the test's.
    assert layer.stats().channels[BRIDGE_CHANNEL].sent == 1


async def test_a_worker_message_that_does_not_fit_the_state_is_ignored(
    server: LiveServer, layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    # The test plays a worker that attaches twice: the second attach is not a transition
    # from ATTACHED, so the connection's events keep going to the first inbound channel.
    first, second = await layer.new_channel("bridgein"), await layer.new_channel("bridgein")

    async def attach_twice() -> None:
        announcement = await layer.receive(BRIDGE_CHANNEL)
        conn = announcement["conn"]
        accept = send_message({"type": "websocket.accept"})
        batch = [attached_message(conn, first, ""), attached_message(conn, second, ""), accept]
        await layer.send(announcement["reply"], batch_message(batch))

    worker = asyncio.create_task(attach_twice())
    with caplog.at_level(logging.WARNING, logger="kanal.bridge"):
        async with connect(f"{server.ws_url}/ws") as ws:
            await worker
            await ws.send("hello")
            async with asyncio.timeout(5):
                envelope = await layer.receive(first)
            assert envelope["type"] == MessageType.RECEIVE
            assert envelope["event"]["type"] == "websocket.receive"
            assert envelope["event"]["text"] == "hello"
            assert layer.receive_nowait(second) is None
    assert "ignored bridge.attached" in caplog.text
