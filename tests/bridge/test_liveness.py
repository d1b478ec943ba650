"""A worker or a server that stops answering is noticed through the leases, and what the
clients (or the worker's applications) see then. The tests play the silent side by hand."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from tests.bridge.apps import make_app
from tests.bridge.conftest import StartWorker
from tests.bridge.test_failures import closed_with
from websockets.asyncio.client import connect

from kanal.bridge import BRIDGE_CHANNEL, BridgeApp, BridgeWorker, MessageType
from kanal.bridge._messages import (
    alive_message,
    attached_message,
    batch_message,
    open_message,
    send_message,
    unbatch,
)
from kanal.bridge._scope import scope_to_wire
from kanal.layers import InMemoryChannelLayer, Message
from kanal.testing import LiveServer

HEARTBEAT = 0.05  # a lease of three heartbeats: 0.15 s


@pytest.fixture
async def bridge(layer: InMemoryChannelLayer) -> AsyncIterator[tuple[BridgeApp, LiveServer]]:
    app = BridgeApp(layer, heartbeat=HEARTBEAT, attach_timeout=1.0)
    server = LiveServer(app, lifespan="off")
    await server.start()
    yield app, server
    await server.stop()


async def attach_silently(layer: InMemoryChannelLayer, *events: Message) -> Message:
    """Play a worker that takes the next announcement, sends ``events``, and then dies: it
    never sends a heartbeat. Returns the announcement."""
    async with asyncio.timeout(5):
        announcement = await layer.receive(BRIDGE_CHANNEL)
    inbound = await layer.new_channel("bridgein")
    control = await layer.new_channel("bridgeworker")
    items = [attached_message(announcement["conn"], inbound, control)]
    items += [send_message(event) for event in events]
    await layer.send(announcement["reply"], batch_message(items))
    return announcement


async def test_a_silent_workers_websocket_goes_to_the_next_worker(
    bridge: tuple[BridgeApp, LiveServer],
    layer: InMemoryChannelLayer,
    start_worker: StartWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, server = bridge
    with caplog.at_level(logging.WARNING, logger="kanal.bridge"):
        connecting = asyncio.ensure_future(connect(f"{server.ws_url}/ws"))
        first = await attach_silently(layer, {"type": "websocket.accept"})
        async with await connecting as ws:
            async with asyncio.timeout(5):
                again = await layer.receive(BRIDGE_CHANNEL)  # the server noticed
            assert again["conn"] == first["conn"] and again["resume"] is True
            assert again["state"] is None and again["accepted"] is True
            assert again["reply"] != first["reply"]  # what the old worker sends is ignored
            await layer.send(BRIDGE_CHANNEL, again)  # for the real worker
            worker, _ = await start_worker()
            await ws.send("after")
            async with asyncio.timeout(5):
                assert await ws.recv() == "echo:after"
            assert worker.resumed == 1
    assert app.stats.workers_lost == 1
    assert app.stats.recovered == 1
    assert "taken as dead" in caplog.text


async def test_a_silent_workers_websocket_is_closed_with_1012_when_no_worker_takes_it(
    bridge: tuple[BridgeApp, LiveServer], layer: InMemoryChannelLayer
) -> None:
    app, server = bridge
    connecting = asyncio.ensure_future(connect(f"{server.ws_url}/ws"))
    await attach_silently(layer, {"type": "websocket.accept"})
    async with await connecting as ws:
        assert await closed_with(ws) == 1012
    assert app.stats.workers_lost == 1
    assert app.stats.closed_worker_lost == 1


async def test_an_http_request_of_a_silent_worker_gets_503(
    bridge: tuple[BridgeApp, LiveServer], layer: InMemoryChannelLayer
) -> None:
    app, server = bridge
    async with httpx.AsyncClient(timeout=10) as client:
        request = asyncio.create_task(client.get(f"{server.url}/slow"))
        await attach_silently(layer)
        response = await request
    assert response.status_code == 503
    assert "worker lost" in response.text
    assert app.stats.http_worker_lost == 1


async def worker_serving(layer: InMemoryChannelLayer, control: str) -> tuple[str, str]:
    """Announce a WebSocket as a server with control channel ``control`` would, and wait for
    a worker to attach and accept it; returns (reply, inbound)."""
    reply = await layer.new_channel("bridge")
    scope = {"type": "websocket", "path": "/ws", "headers": [], "subprotocols": []}
    events = [{"type": "websocket.connect"}]
    await layer.send(
        BRIDGE_CHANNEL, open_message("c0ffee", reply, control, scope_to_wire(scope), events)
    )
    inbound = ""
    async with asyncio.timeout(5):
        accepted = False
        while not accepted:
            for item in unbatch(await layer.receive(reply)):
                if item["type"] == MessageType.ATTACHED:
                    inbound = item["inbound"]
                accepted |= item.get("event", {}).get("type") == "websocket.accept"
    return reply, inbound


async def test_a_worker_gives_a_dead_servers_connections_a_disconnect(
    layer: InMemoryChannelLayer,
) -> None:
    worker = BridgeWorker(make_app(layer), layer=layer, heartbeat=HEARTBEAT, shutdown_timeout=5)
    task = asyncio.create_task(worker.run())
    await worker.started()
    # The test plays a server that never sends a heartbeat: it died after the accept.
    reply, _ = await worker_serving(layer, await layer.new_channel("bridgectl"))
    async with asyncio.timeout(5):
        # The application got websocket.disconnect and returned: bridge.done follows.
        while (await layer.receive(reply))["type"] != MessageType.DONE:
            pass
    assert worker._peers is not None and worker._peers.lost == 1
    worker.stop()
    await task


async def test_a_worker_ends_an_instance_its_server_no_longer_lists(
    layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    worker = BridgeWorker(make_app(layer), layer=layer, heartbeat=HEARTBEAT, shutdown_timeout=5)
    task = asyncio.create_task(worker.run())
    await worker.started()
    control = await layer.new_channel("bridgectl")
    reply, _ = await worker_serving(layer, control)
    instance = worker._instances["c0ffee"].task
    assert instance is not None
    # The test plays a server that is alive but holds nothing with this worker any more
    # (it gave the connection to another worker): its heartbeats list no connection.
    with caplog.at_level(logging.WARNING, logger="kanal.bridge"):
        async with asyncio.timeout(5):
            while not instance.done():
                heartbeat = asyncio.ensure_future(layer.receive(control))
                await asyncio.wait({instance, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
                if not heartbeat.done():
                    heartbeat.cancel()
                    break
                assert heartbeat.result()["conns"] == ["c0ffee"]
                sender = heartbeat.result()["sender"]
                await layer.send(sender, alive_message(control, HEARTBEAT, []))
    assert "no longer has this worker hold connection c0ffee" in caplog.text
    # Ended quietly: nothing more goes to the server for it (no done, no error).
    assert layer.receive_nowait(reply) is None
    worker.stop()
    await task
