"""One process's metrics: a real server and its metrics listener, scraped over HTTP."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import websockets
from tests.metrics.apps import app
from tests.metrics.scrape import Samples, parse, value

from kanal.layers import InMemoryChannelLayer
from kanal.metrics import METRIC_NAMES, ProcessSnapshot, start_listener, take_snapshot
from kanal.server import Config, Server

TOKEN = "s3cret-token"


class Running:
    """A server, its layer and the metrics listener in front of them."""

    def __init__(self, server: Server, listener: Server, layer: InMemoryChannelLayer) -> None:
        self.server = server
        self.listener = listener
        self.layer = layer
        self.url = f"http://127.0.0.1:{server.port}"
        self.metrics_url = f"http://127.0.0.1:{listener.port}"

    async def scrape(self) -> Samples:
        async with httpx.AsyncClient() as client:
            response = await client.get(self.metrics_url + "/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return parse(response.text)

    async def scrape_until(self, check: Callable[[Samples], bool]) -> Samples:
        """Scrape until ``check`` holds: a client's close reaches the server in the loop's
        next rounds, which each scrape (real I/O) lets run."""
        for _ in range(100):
            samples = await self.scrape()
            if check(samples):
                return samples
        raise AssertionError(f"never true in 100 scrapes: {samples}")


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    server = Server(Config(app=app, port=0, request_metrics=True, direct_groups=None))
    await server.start()
    layer = InMemoryChannelLayer(capacity=1)

    async def source() -> list[ProcessSnapshot]:
        return [take_snapshot("0", server=server, layers={"memory://": layer})]

    listener = await start_listener(source, "127.0.0.1:0", dashboard=True, dashboard_token=TOKEN)
    try:
        yield Running(server, listener, layer)
    finally:
        await listener.shutdown(grace=1)
        await server.shutdown(grace=1)
        await layer.close()


async def test_a_scrape_counts_requests_websockets_and_layer_drops(running: Running) -> None:
    async with httpx.AsyncClient() as client:
        for path in ("/", "/", "/", "/missing"):
            await client.get(running.url + path)
    sockets = [await websockets.connect(running.url.replace("http", "ws") + "/ws") for _ in "ab"]
    for ws in sockets:
        for n in range(3):
            await ws.send(f"line {n}")
            assert await ws.recv() == f"line {n}"
    layer = running.layer
    await layer.group_add("room", "member")
    await layer.group_send("room", {"type": "x"})
    await layer.group_send("room", {"type": "x"})  # capacity 1: dropped, counted
    assert (await layer.receive("member"))["type"] == "x"
    await layer.send("gone!1", {"type": "x"})
    await layer.discard_channel("gone!1")  # its receiver closed: the message is freed

    samples = await running.scrape()
    assert value(samples, "kanal_http_requests_total", status="200") == 3
    assert value(samples, "kanal_http_requests_total", status="404") == 1
    assert value(samples, "kanal_http_request_duration_seconds_count") == 4
    assert value(samples, "kanal_http_request_duration_seconds_bucket", le="+Inf") == 4
    assert value(samples, "kanal_connections_open", protocol="websocket") == 2
    assert value(samples, "kanal_connections_accepted_total", protocol="websocket") == 2
    # The HTTP client kept one connection for its four requests; each WebSocket was one too.
    assert value(samples, "kanal_connections_accepted_total", protocol="http") == 3
    assert value(samples, "kanal_websocket_messages_received_total") == 6
    assert value(samples, "kanal_websocket_messages_sent_total", kind="app") == 6
    assert value(samples, "kanal_websocket_received_bytes_total") > 6 * len("line 0")
    assert value(samples, "kanal_layer_group_sends_total", layer="memory") == 2
    assert value(samples, "kanal_layer_messages_sent_total", layer="memory") == 2
    assert value(samples, "kanal_layer_messages_received_total", layer="memory") == 1
    assert value(samples, "kanal_dropped_messages_total", source="memory", reason="full") == 1
    assert value(samples, "kanal_dropped_messages_total", source="memory", reason="discarded") == 1
    assert value(samples, "kanal_processes_reporting") == 1

    await sockets[0].close(code=1000)
    await sockets[1].close(code=4001)
    samples = await running.scrape_until(
        lambda s: value(s, "kanal_connections_open", protocol="websocket") == 0
    )
    assert value(samples, "kanal_websocket_closes_total", code="1000") == 1
    assert value(samples, "kanal_websocket_closes_total", code="4001") == 1


async def test_every_documented_name_is_a_metric(running: Running) -> None:
    samples = await running.scrape()
    for name, _ in samples:
        family = name
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix) and name.removesuffix(suffix) in METRIC_NAMES:
                family = name.removesuffix(suffix)
        assert family in METRIC_NAMES, f"{name} is exported but not in METRIC_NAMES"


async def test_the_dashboard_data_needs_the_token(running: Running) -> None:
    ws = await websockets.connect(running.url.replace("http", "ws") + "/ws")
    try:
        async with httpx.AsyncClient(base_url=running.metrics_url) as client:
            page = await client.get("/dashboard")
            assert page.status_code == 200 and "<canvas" in page.text
            assert (await client.get("/dashboard/data")).status_code == 401
            wrong = {"authorization": "Bearer not-it"}
            assert (await client.get("/dashboard/data", headers=wrong)).status_code == 401
            right = {"authorization": f"Bearer {TOKEN}"}
            data = (await client.get("/dashboard/data", headers=right)).json()
    finally:
        await ws.close()
    (process,) = data["processes"]
    assert process["connections"]["websocket"] == 1
    assert data["expected"] == 1


async def test_the_dashboard_is_off_without_being_asked_for() -> None:
    async def source() -> list[ProcessSnapshot]:
        return [take_snapshot("0")]

    listener = await start_listener(source, "127.0.0.1:0")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}") as client:
            assert (await client.get("/dashboard")).status_code == 404
            assert (await client.get("/dashboard/data")).status_code == 404
            assert (await client.get("/metrics")).status_code == 200
    finally:
        await listener.shutdown(grace=1)


def test_a_bad_metrics_address_is_refused_at_configuration() -> None:
    from kanal.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"\[host:\]port"):
        Config(app=app, metrics="localhost:http")
    with pytest.raises(ConfigError, match="metrics listener"):
        Config(app=app, dashboard=True)
    assert Config(app=app, metrics="9100").request_metrics


async def test_a_call_that_times_out_is_counted() -> None:
    from kanal.worker import ServiceTimeout, call, call_stats

    layer = InMemoryChannelLayer()
    try:
        with pytest.raises(ServiceTimeout):
            await call("nobody.serves.this", {"type": "x"}, timeout=0.05, layer=layer)
    finally:
        await layer.close()
    stats = call_stats()["nobody.serves.this"]
    assert (stats.calls, stats.timeouts, stats.errors) == (1, 1, 0)
    assert stats.latency.snapshot().count == 0  # only answered calls are timed


async def test_a_metrics_port_in_use_is_a_clear_error(running: Running) -> None:
    from kanal.exceptions import ConfigError

    async def source() -> list[ProcessSnapshot]:
        return []

    with pytest.raises(ConfigError, match="the metrics listener: cannot listen on"):
        await start_listener(source, f"127.0.0.1:{running.listener.port}")


async def test_messages_sent_before_the_accept_are_counted(running: Running) -> None:
    # A raw client that sends a frame right behind its handshake, before the 101.
    reader, writer = await asyncio.open_connection("127.0.0.1", running.server.port)
    key = base64.b64encode(os.urandom(16))
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: "
        + key
        + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        + bytes([0x81, 0x82])
        + b"\0\0\0\0"
        + b"hi"
    )
    await reader.readuntil(b"\r\n\r\n")
    assert await reader.readexactly(4) == bytes([0x81, 0x02]) + b"hi"  # the echo
    samples = await running.scrape()
    writer.close()
    assert value(samples, "kanal_websocket_messages_received_total") == 1
    assert value(samples, "kanal_websocket_messages_sent_total", kind="app") == 1
