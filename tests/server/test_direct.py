"""Direct delivery: the server writes a group's broadcasts to its subscribers itself."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from tests.server.conftest import RawClient
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from kanal.exceptions import ASGIMessageError
from kanal.layers import (
    BaseChannelLayer,
    DirectGroupTransport,
    InMemoryChannelLayer,
    direct_message,
)
from kanal.layers.redis import RedisChannelLayer
from kanal.server import Server
from kanal.testing import RedisServer

GROUP = "room"


def transport_on(layer: BaseChannelLayer) -> Any:
    return lambda deliver: DirectGroupTransport(deliver, layer)


class Subscribing:
    """An app that subscribes each WebSocket to GROUP, then echoes what it receives.

    It records the events it receives, to show that broadcasts do not wake it.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.subscribed = 0
        self.all_subscribed = asyncio.Event()
        self.expected = 1
        self.closed: list[int] = []
        self.ended = asyncio.Event()
        self.scope_extensions: dict[str, Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        self.scope_extensions = scope["extensions"]
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "kanal.group.subscribe", "group": GROUP})
        await send({"type": "websocket.send", "text": "subscribed"})
        self.subscribed += 1
        if self.subscribed >= self.expected:
            self.all_subscribed.set()
        while True:
            event = await receive()
            self.events.append(event)
            if event["type"] == "websocket.disconnect":
                self.closed.append(event["code"])
                self.ended.set()
                return
            if event.get("text") == "unsubscribe":
                await send({"type": "kanal.group.unsubscribe", "group": GROUP})
                await send({"type": "websocket.send", "text": "unsubscribed"})


@pytest.fixture
async def layer() -> AsyncIterator[InMemoryChannelLayer]:
    found = InMemoryChannelLayer()
    yield found
    await found.close()


async def connect(server: Server, **options: Any) -> Any:
    client = await websockets.connect(f"ws://127.0.0.1:{server.port}/", **options)
    assert await asyncio.wait_for(client.recv(), 5) == "subscribed"
    return client


async def test_one_broadcast_reaches_every_subscriber_without_waking_the_app(
    serve: Any, layer: InMemoryChannelLayer
) -> None:
    app = Subscribing()
    app.expected = 3
    server = await serve(app, direct_groups=transport_on(layer))
    clients = [await connect(server) for _ in range(3)]
    assert "kanal.groups" in app.scope_extensions
    await layer.group_send(GROUP, direct_message(GROUP, text="hello"))
    await layer.group_send(GROUP, direct_message(GROUP, bytes_data=b"\x00\x01"))
    for client in clients:
        assert await asyncio.wait_for(client.recv(), 5) == "hello"
        assert await asyncio.wait_for(client.recv(), 5) == b"\x00\x01"
    assert app.events == []  # no application instance woke up
    stats = server.stats()
    assert stats.direct_messages == 2
    assert stats.direct_frames == 6
    # One membership for the process, however many subscribers it has.
    assert layer.stats().groups[GROUP].delivered == 2
    for client in clients:
        await client.close()


async def test_unsubscribe_and_the_last_subscriber_gone_leave_the_group(
    serve: Any, layer: InMemoryChannelLayer
) -> None:
    app = Subscribing()
    app.expected = 2
    server = await serve(app, direct_groups=transport_on(layer))
    first, second = await connect(server), await connect(server)
    await first.send("unsubscribe")
    assert await asyncio.wait_for(first.recv(), 5) == "unsubscribed"
    await layer.group_send(GROUP, direct_message(GROUP, text="only the second"))
    assert await asyncio.wait_for(second.recv(), 5) == "only the second"
    assert server.stats().direct_frames == 1
    # The last local subscriber leaves: so does the process.
    await second.send("unsubscribe")
    assert await asyncio.wait_for(second.recv(), 5) == "unsubscribed"
    assert server.state.direct.groups == {}
    pending = list(server.state.direct._ops.values())
    if pending:
        await asyncio.wait(pending, timeout=5)
    assert not layer._groups.get(GROUP)
    await layer.group_send(GROUP, direct_message(GROUP, text="nobody"))
    assert server.stats().direct_frames == 1
    await first.close()
    await second.close()


async def test_order_is_kept_between_the_apps_sends_and_direct_frames(
    serve: Any, layer: InMemoryChannelLayer
) -> None:
    servers: list[Server] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "kanal.group.subscribe", "group": GROUP})
        await receive()  # "go"
        await send({"type": "websocket.send", "text": "1"})  # written at once
        await send({"type": "websocket.send", "text": "2"})  # same round: held for one write
        # A broadcast handed over now must not overtake "2".
        servers[0].state.direct.deliver([(GROUP, {"text": "3"})])
        await send({"type": "websocket.send", "text": "4"})
        await receive()

    server = await serve(app, direct_groups=transport_on(layer))
    servers.append(server)
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as client:
        await client.send("go")
        got = [await asyncio.wait_for(client.recv(), 5) for _ in range(4)]
    assert got == ["1", "2", "3", "4"]


async def test_several_broadcasts_at_once_arrive_in_order(
    serve: Any, layer: InMemoryChannelLayer
) -> None:
    app = Subscribing()
    app.expected = 2
    server = await serve(app, direct_groups=transport_on(layer))
    clients = [await connect(server), await connect(server)]
    for n in range(200):
        await layer.group_send(GROUP, direct_message(GROUP, text=str(n)))
    for client in clients:
        assert [await asyncio.wait_for(client.recv(), 5) for _ in range(200)] == [
            str(n) for n in range(200)
        ]
        await client.close()


async def test_a_close_broadcast_closes_every_subscriber(
    serve: Any, layer: InMemoryChannelLayer
) -> None:
    app = Subscribing()
    app.expected = 2
    server = await serve(app, direct_groups=transport_on(layer))
    clients = [await connect(server), await connect(server)]
    await layer.group_send(GROUP, direct_message(GROUP, text="last words"))
    await layer.group_send(GROUP, direct_message(GROUP, close=4001, reason="room closed"))
    for client in clients:
        assert await asyncio.wait_for(client.recv(), 5) == "last words"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), 5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "room closed")


def _small_receive_buffer_client(port: int) -> socket.socket:
    sock = socket.socket()
    # A client that reads nothing and holds little in its kernel buffer: the server's
    # own buffer towards it fills soon.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def _stalled_client(port: int) -> RawClient:
    sock = _small_receive_buffer_client(port)
    reader, writer = await asyncio.open_connection(sock=sock)
    client = RawClient(reader, writer)
    await client.send(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return client


@pytest.mark.parametrize("policy", ["close", "drop"])
async def test_a_reader_that_does_not_read_is_closed_or_skipped_and_counted(
    serve: Any, layer: InMemoryChannelLayer, policy: str
) -> None:
    app = Subscribing()
    app.expected = 2
    server = await serve(
        app,
        direct_groups=transport_on(layer),
        ws_direct_buffer_limit=64 * 1024,
        ws_direct_overflow=policy,
        ws_ping_interval=None,
    )
    fast = await connect(server)
    stalled = await _stalled_client(server.port)
    await asyncio.wait_for(app.all_subscribed.wait(), 5)
    payload = "x" * 16 * 1024
    sent = 0
    async with asyncio.timeout(20):
        while not (server.stats().ws_direct_slow_closes or server.stats().ws_direct_drops):
            await layer.group_send(GROUP, direct_message(GROUP, text=payload))
            sent += 1
            # The fast reader gets every broadcast: the stalled one does not hold it back.
            assert await fast.recv() == payload
    stats = server.stats()
    # The stalled connection's buffer stayed bounded.
    sizes = [
        c.transport.get_write_buffer_size()  # type: ignore[attr-defined]
        for c in server.state.connections
        if hasattr(c, "session")
    ]
    assert max(sizes) <= 64 * 1024 + 128  # the limit, and a close frame past it at most
    if policy == "close":
        assert stats.ws_direct_slow_closes == 1 and stats.ws_direct_drops == 0
        await asyncio.wait_for(app.ended.wait(), 5)
        assert app.closed == [1013]
    else:
        assert stats.ws_direct_drops >= 1 and stats.ws_direct_slow_closes == 0
        assert app.closed == []
    await layer.group_send(GROUP, direct_message(GROUP, text="after"))
    assert await asyncio.wait_for(fast.recv(), 5) == "after"
    await fast.close()
    stalled.writer.close()


async def test_compressed_connections_get_direct_frames_and_their_own_compressed_ones(
    serve: Any, layer: InMemoryChannelLayer
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "kanal.group.subscribe", "group": GROUP})
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo " + event["text"]})

    server = await serve(app, direct_groups=transport_on(layer), ws_per_message_deflate=True)
    async with websockets.connect(
        f"ws://127.0.0.1:{server.port}/",
        extensions=[ClientPerMessageDeflateFactory()],
        compression=None,
    ) as client:
        assert client.protocol.extensions  # permessage-deflate was negotiated
        for n in range(3):
            await client.send(f"line {n} " * 50)
            assert await asyncio.wait_for(client.recv(), 5) == "echo " + f"line {n} " * 50
            await layer.group_send(GROUP, direct_message(GROUP, text=f"broadcast {n} " * 50))
            assert await asyncio.wait_for(client.recv(), 5) == f"broadcast {n} " * 50


async def test_without_the_extension_subscribing_is_an_error(serve: Any) -> None:
    errors: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert "kanal.groups" not in scope["extensions"]
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await send({"type": "kanal.group.subscribe", "group": GROUP})
        except ASGIMessageError as exc:
            errors.append(exc)
        await send({"type": "websocket.close"})

    server = await serve(app, direct_groups=None)
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as client:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(client.recv(), 5)
    assert len(errors) == 1


async def test_direct_delivery_on_redis_across_two_servers(
    serve: Any, redis_server: RedisServer
) -> None:
    layers = [RedisChannelLayer(redis_server.url) for _ in range(2)]
    try:
        apps = [Subscribing(), Subscribing()]
        servers = [
            await serve(app, direct_groups=transport_on(layer))
            for app, layer in zip(apps, layers, strict=True)
        ]
        clients = [await connect(server) for server in servers for _ in range(2)]
        await layers[0].group_send(GROUP, direct_message(GROUP, text="everywhere"))
        for client in clients:
            assert await asyncio.wait_for(client.recv(), 5) == "everywhere"
            await client.close()
        assert [s.stats().direct_frames for s in servers] == [2, 2]
    finally:
        for layer in layers:
            await layer.close()
