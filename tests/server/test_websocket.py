"""WebSocket over real sockets, with the ``websockets`` client library and raw frames."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import websockets
from tests.server import apps
from tests.server.conftest import RawClient, ReadPauses
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Frame, Opcode

from kanal.server._flow import PAUSE_APP

HANDSHAKE = (
    b"GET /raw HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True, extensions=[])


async def read_frame(client: RawClient) -> tuple[int, bytes]:
    """One unmasked server frame (payloads < 126 bytes): (opcode, payload)."""
    head = await asyncio.wait_for(client.reader.readexactly(2), 10)
    length = head[1] & 0x7F
    assert length < 126
    return head[0] & 0x0F, await client.reader.readexactly(length)


async def raw_ws(raw: Any, port: int) -> RawClient:
    client: RawClient = await raw(port)
    await client.send(HANDSHAKE)
    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ")
    return client


async def test_echo_text_and_binary(serve: Any) -> None:
    server = await serve(apps.hello)
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\x01\x02")
        assert await ws.recv() == b"\x00\x01\x02"
        big = "x" * 200_000
        await ws.send(big)
        assert await ws.recv() == big


async def test_websocket_scope_and_subprotocol_and_accept_headers(serve: Any) -> None:
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        scopes.append(scope)
        await receive()
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": "v2.chat",
                "headers": [(b"x-accepted", b"yes")],
            }
        )
        await send({"type": "websocket.send", "text": scope["path"]})
        await receive()

    server = await serve(app, root_path="/base")
    async with websockets.connect(
        f"ws://127.0.0.1:{server.port}/room%20one?x=1", subprotocols=["v1.chat", "v2.chat"]
    ) as ws:
        assert ws.subprotocol == "v2.chat"
        assert ws.response is not None
        assert ws.response.headers["x-accepted"] == "yes"
        assert await ws.recv() == "/base/room one"
    (scope,) = scopes
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert scope["http_version"] == "1.1"
    assert scope["raw_path"] == b"/room%20one"
    assert scope["query_string"] == b"x=1"
    assert scope["root_path"] == "/base"
    assert scope["subprotocols"] == ["v1.chat", "v2.chat"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ("127.0.0.1", server.port)
    assert "websocket.http.response" in scope["extensions"]
    assert any(name == b"sec-websocket-key" for name, _ in scope["headers"])


async def test_close_codes_and_reasons_pass_both_ways(serve: Any) -> None:
    disconnects: list[dict[str, Any]] = []
    got = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        if message.get("text") == "close me":
            await send({"type": "websocket.close", "code": 4321, "reason": "as you wish"})
        message = await receive()
        disconnects.append(message)
        got.set()

    server = await serve(app)
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        await ws.send("close me")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4321, "as you wish")

    got.clear()
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        await ws.send("stay")
        await ws.close(4002, "client says bye")
    await asyncio.wait_for(got.wait(), 5)
    assert disconnects[-1] == {
        "type": "websocket.disconnect",
        "code": 4002,
        "reason": "client says bye",
    }


async def test_denial_response_extension(serve: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"log in first"})

    server = await serve(app)
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/"):
            pass
    response = info.value.response
    assert response.status_code == 401
    assert response.body == b"log in first"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_close_before_accept_is_a_403(serve: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close"})

    server = await serve(app)
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/"):
            pass
    assert info.value.response.status_code == 403


async def test_app_errors_give_500_before_accept_and_1011_after(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        if scope["path"] == "/early":
            raise RuntimeError("fails before accepting")
        await send({"type": "websocket.accept"})
        await receive()
        raise RuntimeError("fails after accepting")

    server = await serve(app)
    with caplog.at_level(logging.ERROR, logger="kanal.server"):
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/early"):
                pass
        assert info.value.response.status_code == 500
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/late") as ws:
            await ws.send("trigger")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert "application error in WebSocket /early" in caplog.text
    assert "application error in WebSocket /late" in caplog.text


async def test_fragmented_client_message_arrives_whole(serve: Any) -> None:
    server = await serve(apps.hello)
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        await ws.send(["frag", "mented ", "message"])
        assert await ws.recv() == "fragmented message"
        await ws.send([b"\x01", b"\x02"])
        assert await ws.recv() == b"\x01\x02"


async def test_burst_of_messages_echoed_in_order(serve: Any, raw: Any) -> None:
    server = await serve(apps.hello)
    client = await raw_ws(raw, server.port)
    sent = [f"m{i}".encode() for i in range(8)]
    # One write: the server reads them together and writes the echoes as one burst.
    await client.send(b"".join(masked(Opcode.TEXT, data) for data in sent))
    assert [await read_frame(client) for _ in sent] == [(Opcode.TEXT.value, d) for d in sent]
    await client.send(masked(Opcode.TEXT, b"alone"))
    assert await read_frame(client) == (Opcode.TEXT.value, b"alone")


async def test_replies_go_out_while_the_app_waits_elsewhere(serve: Any, raw: Any) -> None:
    # Replies sent while more messages wait for the app are buffered; they must still be
    # written when the app then waits on something other than receive().
    release = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.send", "text": "a"})
        await send({"type": "websocket.send", "bytes": b"b"})
        await release.wait()
        await send({"type": "websocket.send", "text": "c"})
        await receive()

    server = await serve(app)
    client = await raw_ws(raw, server.port)
    await client.send(b"".join(masked(Opcode.TEXT, b"x") for _ in range(3)))
    assert await read_frame(client) == (Opcode.TEXT.value, b"a")
    assert await read_frame(client) == (Opcode.BINARY.value, b"b")
    release.set()
    assert await read_frame(client) == (Opcode.TEXT.value, b"c")


async def test_sends_in_one_round_go_out_in_order_before_the_close(serve: Any, raw: Any) -> None:
    # The first send of a round is written at once, the rest of the round's are joined
    # into one write at its end; a close in the same round must still come after them.
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        for n in range(50):
            await send({"type": "websocket.send", "text": f"m{n}"})
        await send({"type": "websocket.close", "code": 4000})
        await receive()

    server = await serve(app)
    client = await raw_ws(raw, server.port)
    await client.send(masked(Opcode.TEXT, b"go"))
    assert [await read_frame(client) for _ in range(50)] == [
        (Opcode.TEXT.value, f"m{n}".encode()) for n in range(50)
    ]
    opcode, payload = await read_frame(client)
    assert (opcode, payload[:2]) == (Opcode.CLOSE.value, (4000).to_bytes(2, "big"))


async def test_message_over_the_size_limit_closes_1009(serve: Any) -> None:
    server = await serve(apps.hello, ws_max_size=1000)
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        await ws.send("x" * 1000)
        assert len(await ws.recv()) == 1000
        await ws.send("x" * 1001)
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_invalid_utf8_closes_1007(serve: Any, raw: Any) -> None:
    server = await serve(apps.hello)
    client = await raw_ws(raw, server.port)
    await client.send(masked(Opcode.TEXT, b"ok \xff\xfe"))
    opcode, payload = await read_frame(client)
    assert opcode == Opcode.CLOSE.value
    assert Close.parse(payload).code == 1007


async def test_protocol_error_closes_1002(serve: Any, raw: Any) -> None:
    server = await serve(apps.hello)
    client = await raw_ws(raw, server.port)
    await client.send(masked(Opcode.CONT, b"continuation of nothing"))
    opcode, payload = await read_frame(client)
    assert opcode == Opcode.CLOSE.value
    assert Close.parse(payload).code == 1002


async def test_invalid_handshake_is_a_400_without_the_app(serve: Any, raw: Any) -> None:
    called = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append(scope["type"])

    server = await serve(app, lifespan="off")
    client: RawClient = await raw(server.port)
    await client.send(HANDSHAKE.replace(b"Version: 13", b"Version: 8"))
    data = await client.read_all()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert called == []


async def test_keepalive_ping_answered_keeps_the_connection(serve: Any, raw: Any) -> None:
    server = await serve(apps.hello, ws_ping_interval=0.1, ws_ping_timeout=0.3)
    client = await raw_ws(raw, server.port)
    for _ in range(2):
        opcode, payload = await read_frame(client)
        assert opcode == Opcode.PING.value
        await client.send(masked(Opcode.PONG, payload))
    await client.send(masked(Opcode.TEXT, b"still here"))
    assert await read_frame(client) == (Opcode.TEXT.value, b"still here")


async def test_keepalive_ping_unanswered_closes_1011(serve: Any, raw: Any) -> None:
    closed = asyncio.Event()
    codes: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        codes.append(message["code"])
        closed.set()

    server = await serve(app, ws_ping_interval=0.1, ws_ping_timeout=0.2)
    client = await raw_ws(raw, server.port)
    assert (await read_frame(client))[0] == Opcode.PING.value
    opcode, payload = await read_frame(client)  # never answered
    assert opcode == Opcode.CLOSE.value
    assert Close.parse(payload).code == 1011
    await asyncio.wait_for(closed.wait(), 5)
    assert codes == [1011]


async def test_send_after_disconnect_raises_oserror(serve: Any) -> None:
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    server = await serve(app)
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/"):
        pass
    assert isinstance(await asyncio.wait_for(outcome, 5), OSError)


@pytest.mark.parametrize("enabled", [False, True])
async def test_per_message_deflate_only_when_enabled(serve: Any, enabled: bool) -> None:
    server = await serve(apps.hello, ws_per_message_deflate=enabled)
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        names = [ext.name for ext in ws.protocol.extensions]
        await ws.send("compress " * 100)
        assert await ws.recv() == "compress " * 100
    assert names == (["permessage-deflate"] if enabled else [])


async def test_slow_websocket_client_makes_the_app_wait(serve: Any, raw: Any) -> None:
    progress = asyncio.Event()
    sent = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal sent
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        for _ in range(1000):
            await send({"type": "websocket.send", "bytes": b"z" * 65536})
            sent += 1
            progress.set()

    server = await serve(app, write_buffer_limit=64 * 1024)
    client = await raw_ws(raw, server.port)
    while True:
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), 0.5)
        except TimeoutError:
            break
    assert sent < 1000
    (connection,) = server.state.connections
    transport = connection.transport  # type: ignore[attr-defined]
    assert transport.get_write_buffer_size() <= 64 * 1024 + 65536 + 16
    await client.close()


async def test_access_log_shows_the_handshake_answer(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve(apps.hello, access_log=True)
    with caplog.at_level(logging.INFO, logger="kanal.server.access"):
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/chat?room=1") as ws:
            await ws.send("x")
            await ws.recv()
    assert '"WEBSOCKET /chat?room=1" 101' in caplog.text


async def test_app_that_does_not_receive_makes_the_server_stop_reading(
    serve: Any, raw: Any, read_pauses: ReadPauses
) -> None:
    gate = asyncio.Event()
    count = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal count
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()
        while (await receive())["type"] == "websocket.receive":
            count += 1
            if count == 4096:
                await send({"type": "websocket.send", "text": "got them all"})

    server = await serve(app)
    client = await raw_ws(raw, server.port)
    message = masked(Opcode.BINARY, b"m" * 4096)
    client.writer.write(message * 4096)  # 16 MiB
    await read_pauses.wait(PAUSE_APP)
    (connection,) = server.state.connections
    queued = len(connection.session.events)  # type: ignore[attr-defined]
    # At most the high-water mark plus what one socket read held (256 KiB of messages).
    assert queued <= 16 + 256 * 1024 // 4096 + 1
    assert connection.flow.read_paused  # type: ignore[attr-defined]
    assert not connection.transport.is_reading()  # type: ignore[attr-defined]
    assert server.stats().read_pauses_app >= 1
    gate.set()
    await asyncio.wait_for(client.writer.drain(), 30)
    opcode, payload = await read_frame(client)
    assert (opcode, payload) == (Opcode.TEXT.value, b"got them all")
