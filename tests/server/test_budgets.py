"""Hostile WebSocket clients over real sockets: every byte budget holds, and is counted.

Each test sends what a hostile or broken client would, waits for the moment the server
reaches the budget (it pauses reading; ``read_pauses`` reports it), measures what the server
holds then, and checks that the connection still works afterwards: nothing read was lost,
and the close code is the expected one. See the "Limits" section of docs/server.md.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest
import websockets
from tests.server import apps
from tests.server.conftest import ReadPauses
from tests.server.test_websocket import HANDSHAKE, masked, raw_ws, read_frame
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from kanal.server._flow import PAUSE_APP, PAUSE_HANDSHAKE, PAUSE_PEER
from kanal.server._websocket import WebSocketProtocol

KIB = 1024
#: What one socket read may add past a budget (asyncio and uvloop read 256 KiB at most).
ONE_READ = 256 * KIB


def _server_side(server: Any) -> Any:
    (connection,) = server.state.connections
    return connection


async def test_data_before_the_accept_is_held_up_to_its_budget(
    serve: Any, raw: Any, read_pauses: ReadPauses, caplog: pytest.LogCaptureFixture
) -> None:
    gate = asyncio.Event()
    received = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal received
        if scope["type"] != "websocket":
            return
        await receive()
        await gate.wait()  # a slow app: the client streams meanwhile
        await send({"type": "websocket.accept"})
        while (await receive())["type"] == "websocket.receive":
            received += 1
            if received == 4096:
                await send({"type": "websocket.send", "text": "got them all"})
                await send({"type": "websocket.close", "code": 1000})

    server = await serve(app)
    client = await raw(server.port)
    # The handshake and 16 MiB of messages at once, without waiting for the 101.
    client.writer.write(HANDSHAKE + masked(Opcode.BINARY, b"m" * 4096) * 4096)
    with caplog.at_level(logging.INFO, logger="kanal.server"):
        await read_pauses.wait(PAUSE_HANDSHAKE)
    connection = _server_side(server)
    held = connection.session.pending_bytes
    assert 64 * KIB < held <= 64 * KIB + ONE_READ
    assert not connection.transport.is_reading()
    assert server.stats().read_pauses_handshake == 1
    assert "bytes before the handshake was answered" in caplog.text

    gate.set()
    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert await asyncio.wait_for(read_frame(client), 30) == (Opcode.TEXT.value, b"got them all")
    opcode, payload = await read_frame(client)
    assert (opcode, Close.parse(payload).code) == (Opcode.CLOSE.value, 1000)
    assert received == 4096  # nothing held was lost


async def test_data_before_a_denial_is_dropped_not_held(
    serve: Any, raw: Any, read_pauses: ReadPauses
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close"})

    server = await serve(app)
    client = await raw(server.port)
    await client.send(HANDSHAKE + masked(Opcode.TEXT, b"early") * 100)
    response = await client.read_all()
    assert response.startswith(b"HTTP/1.1 403 ")
    assert not read_pauses.events[PAUSE_HANDSHAKE].is_set()  # 1 KiB is within budget


async def test_ping_flood_from_a_client_that_does_not_read(
    serve: Any, read_pauses: ReadPauses
) -> None:
    server = await serve(apps.hello, write_buffer_limit=64 * KIB)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    # A small receive window: the kernel takes little of the pongs off the server's hands,
    # so its own buffer is what fills.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KIB)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(HANDSHAKE)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101 ")
        pings = 64 * 1024
        writer.write(masked(Opcode.PING, b"p" * 125) * pings)  # 8.4 MB, nothing read back

        await read_pauses.wait(PAUSE_PEER)
        connection = _server_side(server)
        # What the server holds for this client: the pongs it could not send yet.
        assert connection.transport.get_write_buffer_size() <= 64 * KIB + ONE_READ
        assert not connection.transport.is_reading()
        stats = server.stats()
        assert stats.read_pauses_peer >= 1 and stats.write_pauses >= 1

        # The client reads at last: every ping gets its pong, and the connection works.
        parser = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN)
        pongs = 0
        while pongs < pings:
            data = await asyncio.wait_for(reader.read(1 << 20), 30)
            assert data, "the server closed the connection"
            parser.receive_data(data)
            frames = [e for e in parser.events_received() if isinstance(e, Frame)]
            assert {f.opcode for f in frames} <= {Opcode.PONG}
            pongs += len(frames)
        assert pongs == pings
        writer.write(masked(Opcode.CLOSE, Close(1000, "enough").serialize()))
        data = await asyncio.wait_for(reader.read(), 10)
        parser.receive_data(data)
        (close,) = [e for e in parser.events_received() if isinstance(e, Frame)]
        assert Close.parse(close.data).code == 1000
    finally:
        writer.close()


async def test_large_messages_for_a_slow_app_are_bounded_in_bytes(
    serve: Any, raw: Any, read_pauses: ReadPauses
) -> None:
    gate = asyncio.Event()
    sizes: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()
        while (message := await receive())["type"] == "websocket.receive":
            sizes.append(len(message["bytes"]))
            if len(sizes) == 64:
                await send({"type": "websocket.send", "text": "done"})

    server = await serve(app)
    client = await raw_ws(raw, server.port)
    client.writer.write(masked(Opcode.BINARY, b"m" * 128 * KIB) * 64)  # 8 MiB
    await read_pauses.wait(PAUSE_APP)
    connection = _server_side(server)
    session = connection.session
    # read_buffer_limit (64 KiB) stops reading long before the 16-message mark would.
    assert session.queued_bytes <= 64 * KIB + ONE_READ + 128 * KIB
    assert len(session.events) < 16
    assert not connection.transport.is_reading()
    gate.set()
    assert await asyncio.wait_for(read_frame(client), 30) == (Opcode.TEXT.value, b"done")
    assert sizes == [128 * KIB] * 64


async def test_a_message_over_the_size_limit_closes_1009_and_is_counted(serve: Any) -> None:
    server = await serve(apps.hello, ws_max_size=1000)
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        await ws.send("x" * 1001)
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    assert server.stats().ws_messages_too_big == 1


class _Flooder(asyncio.Protocol):
    """A client that reads the 101, then writes without ever reading again."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[bytes] = loop.create_future()
        self.lost: asyncio.Future[Exception | None] = loop.create_future()
        self.head = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(HANDSHAKE)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.head += data
        if b"\r\n\r\n" in self.head and not self.opened.done():
            self.transport.pause_reading()  # type: ignore[union-attr]
            self.opened.set_result(self.head)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def test_a_client_that_never_reads_is_cut_at_the_keepalive_timeout(
    serve: Any, read_pauses: ReadPauses, monkeypatch: pytest.MonkeyPatch
) -> None:
    disconnected: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    server_lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    connection_lost = WebSocketProtocol.connection_lost

    def watch_lost(self: WebSocketProtocol, exc: Exception | None) -> None:
        connection_lost(self, exc)
        if not server_lost.done():
            server_lost.set_result(None)

    monkeypatch.setattr(WebSocketProtocol, "connection_lost", watch_lost)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] != "websocket.disconnect":
            pass
        disconnected.set_result(message)

    server = await serve(app, ws_ping_interval=0.1, ws_ping_timeout=0.2)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KIB)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    _, client = await loop.create_connection(_Flooder, sock=sock)
    assert (await asyncio.wait_for(client.opened, 10)).startswith(b"HTTP/1.1 101 ")
    assert client.transport is not None
    client.transport.write(masked(Opcode.PING, b"p" * 125) * 64 * 1024)
    await read_pauses.wait(PAUSE_PEER)
    # Its pongs, and then the server's keepalive ping, stay unread: no pong comes back, the
    # app hears 1011, and the connection is cut rather than left to drain forever.
    message = await asyncio.wait_for(disconnected, 30)
    assert message["code"] == 1011
    # The server lets go of the socket while the client still reads nothing: a graceful close
    # would wait for its pongs to be read, forever.
    await asyncio.wait_for(server_lost, 30)
    # The client reads again to notice the reset: a socket that neither reads nor has bytes
    # left to write is never polled, so without this it may never hear that it was cut.
    client.transport.resume_reading()
    await asyncio.wait_for(client.lost, 30)
    assert server.stats().ws_ping_timeouts == 1
    assert not server.state.connections
