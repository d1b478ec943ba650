"""Hostile bytes over real sockets: smuggling through HTTP/1.0 framing, header injection
through the application's headers, and secure cookies behind a TLS-terminating proxy."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import websockets
from tests.server.conftest import RawClient

from kanal.exceptions import InvalidHeader
from kanal.middleware import MemorySessionStore, ServerSideSessions, SessionMiddleware

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_http10_chunked_request_is_answered_then_the_connection_closes(
    serve: Any, raw: Any
) -> None:
    # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing. A proxy in front that
    # reads this body by another rule would have forwarded /smuggled as part of it; the
    # server must not serve what follows, even though the client asked for keep-alive.
    seen: list[tuple[str, bytes]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append((scope["path"], body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    server = await serve(app)
    client: RawClient = await raw(server.port)
    await client.send(
        b"POST /first HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    status, headers, body = await client.read_response()
    assert (status, headers["connection"], body) == (200, "close", b"ok")
    assert await client.read_all() == b""  # closed, and no second response
    assert seen == [("/first", b"hello")]


# Header lines an application can be tricked into sending (a user's redirect target or file
# name copied into a header).
HOSTILE = [
    pytest.param(b"x-name\r\nSet-Cookie", b"admin=1", id="CRLF in name"),
    pytest.param(b"location", b"/next\r\nSet-Cookie: admin=1", id="CRLF in value"),
    pytest.param(b"x-file", b"report\x00.pdf", id="NUL in value"),
]


def response_app(name: bytes, value: bytes, errors: list[Exception], *, recover: bool) -> Any:
    """An HTTP app that sends ``name: value``; with ``recover`` it then sends a clean 200."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [(name, value)]})
        except InvalidHeader as exc:
            errors.append(exc)
            if not recover:
                raise
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"recovered"})
            return
        await send({"type": "http.response.body", "body": b"sent as is"})

    return app


@pytest.mark.parametrize(("name", "value"), HOSTILE)
async def test_bad_response_header_gives_the_app_an_error_and_the_client_a_500(
    serve: Any, raw: Any, name: bytes, value: bytes
) -> None:
    errors: list[Exception] = []
    server = await serve(response_app(name, value, errors, recover=False))
    client: RawClient = await raw(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await client.read_response()
    assert (status, headers["connection"]) == (500, "close")
    assert "set-cookie" not in headers and b"admin" not in await client.read_all()
    assert [type(e) for e in errors] == [InvalidHeader]


async def test_app_that_catches_the_bad_header_can_still_answer(serve: Any, raw: Any) -> None:
    errors: list[Exception] = []
    server = await serve(response_app(b"location", b"/a\r\nX-Injected: 1", errors, recover=True))
    client: RawClient = await raw(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await client.read_response()
    assert (status, body) == (200, b"recovered")
    assert "x-injected" not in headers
    assert len(errors) == 1


@pytest.mark.parametrize(("name", "value"), HOSTILE)
@pytest.mark.parametrize("answer", ["websocket.accept", "websocket.http.response.start"])
async def test_bad_handshake_header_refuses_the_handshake_with_500(
    serve: Any, raw: Any, answer: str, name: bytes, value: bytes
) -> None:
    errors: list[Exception] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        message: dict[str, Any] = {"type": answer, "headers": [(name, value)]}
        if answer == "websocket.http.response.start":
            message["status"] = 401  # a denial response
        try:
            await send(message)
        except InvalidHeader as exc:
            errors.append(exc)
            raise

    server = await serve(app)
    client: RawClient = await raw(server.port)
    await client.send(HANDSHAKE)
    data = await client.read_all()  # the whole answer, then the server closes
    assert data.startswith(b"HTTP/1.1 500 ")
    assert b"admin" not in data and b"\x00" not in data
    assert [type(e) for e in errors] == [InvalidHeader]


def cookie_is_secure(set_cookie: str) -> bool:
    return "secure" in {part.strip().lower() for part in set_cookie.split(";")[1:]}


async def session_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Writes to the session on every request and WebSocket handshake."""
    if scope["type"] == "http":
        scope["session"]["seen"] = True
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif scope["type"] == "websocket":
        await receive()
        scope["session"]["seen"] = True
        await send({"type": "websocket.accept"})
        await receive()


@pytest.mark.parametrize(
    ("allowed", "forwarded", "secure"),
    [
        ("127.0.0.1", "https", True),  # a trusted proxy terminated TLS
        ("127.0.0.1", "http", False),
        ("10.9.9.9", "https", False),  # anyone else cannot claim TLS
    ],
)
async def test_session_cookie_is_secure_behind_a_trusted_tls_proxy(
    serve: Any, allowed: str, forwarded: str, secure: bool
) -> None:
    app = SessionMiddleware(session_app, ServerSideSessions(MemorySessionStore()))
    server = await serve(app, proxy_headers=True, forwarded_allow_ips=allowed)
    headers = {"X-Forwarded-Proto": forwarded}
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/", headers=headers)
    assert cookie_is_secure(response.headers["set-cookie"]) is secure
    # The WebSocket scheme follows the proxy too (https becomes wss).
    async with websockets.connect(
        f"ws://127.0.0.1:{server.port}/ws", additional_headers=headers
    ) as ws:
        assert ws.response is not None
        assert cookie_is_secure(ws.response.headers["set-cookie"]) is secure
        await asyncio.wait_for(ws.close(), 5)
