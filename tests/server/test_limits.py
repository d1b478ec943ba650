"""Limits, timeouts, bad input and misbehaving apps: each answered, logged, contained."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from tests.server import apps
from tests.server.conftest import RawClient

from kanal.protocols import HTTPLimits


@pytest.mark.parametrize(
    ("request_bytes", "limits", "status"),
    [
        (b"BROKEN\r\n\r\n", HTTPLimits(), 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad header line\r\n\r\n", HTTPLimits(), 400),
        (b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", HTTPLimits(), 505),
        (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n", HTTPLimits(max_request_line=256), 414),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 2000 + b"\r\n\r\n",
            HTTPLimits(max_header_bytes=1024),
            431,
        ),
        (
            b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(20)) + b"\r\n",
            HTTPLimits(max_headers=10),
            431,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n",
            HTTPLimits(max_body_size=1000),
            413,
        ),
    ],
)
async def test_bad_requests_get_a_status_and_a_close(
    serve: Any, raw: Any, request_bytes: bytes, limits: HTTPLimits, status: int
) -> None:
    server = await serve(apps.hello, limits=limits)
    client: RawClient = await raw(server.port)
    await client.send(request_bytes)
    data = await client.read_all()
    assert data.startswith(b"HTTP/1.1 %d " % status)
    assert b"connection: close" in data
    # The server is fine for everyone else.
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{server.port}/")).status_code == 200


async def test_chunked_body_over_the_limit_disconnects_the_app(serve: Any, raw: Any) -> None:
    seen: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        done.set()

    server = await serve(app, limits=HTTPLimits(max_body_size=10))
    client: RawClient = await raw(server.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    await client.send(b"8\r\n12345678\r\n8\r\n12345678\r\n")
    data = await client.read_all()
    assert data.startswith(b"HTTP/1.1 413 ")
    await asyncio.wait_for(done.wait(), 5)
    assert seen[-1]["type"] == "http.disconnect"


async def test_header_read_timeout_cuts_off_a_slow_client(
    serve: Any, raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kanal.server")
    server = await serve(apps.hello, timeout_header_read=0.2)
    client: RawClient = await raw(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    data = await client.read_all(wait=5)
    assert data.startswith(b"HTTP/1.1 408 ")
    # Logged at INFO with the client, as every rejected request is (docs/server.md).
    assert any(
        "rejected request from" in r.getMessage() and "408" in r.getMessage()
        for r in caplog.records
    )


async def test_idle_keep_alive_connection_times_out(serve: Any, raw: Any) -> None:
    server = await serve(apps.hello, timeout_keep_alive=0.2)
    client: RawClient = await raw(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await client.read_response()
    assert (status, headers["connection"]) == (200, "keep-alive")
    assert await client.read_all(wait=5) == b""  # closed by the server, silently
    assert not server.state.connections


async def test_limit_concurrency_answers_503(serve: Any, raw: Any) -> None:
    server = await serve(apps.hello, limit_concurrency=1)
    first: RawClient = await raw(server.port)
    await first.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await first.read_response())[0] == 200
    second: RawClient = await raw(server.port)
    data = await second.read_all()
    assert data.startswith(b"HTTP/1.1 503 ")
    await first.close()


def _app_that(behaviour: str) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/ok":
            await apps.hello(scope, receive, send)
        elif behaviour == "raise":
            raise ValueError("boom in the app")
        elif behaviour == "return":
            return
        elif behaviour == "invalid":
            await send({"type": "http.response.start", "status": "two hundred"})
        elif behaviour == "wrong-type":
            await send({"type": "websocket.accept"})
        elif behaviour == "raise-after-start":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise ValueError("boom in the middle")

    return app


@pytest.mark.parametrize(
    ("behaviour", "logged"),
    [
        ("raise", "application error in GET /broken"),
        ("return", "returned without a response for GET /broken"),
        ("invalid", "application error in GET /broken"),
        ("wrong-type", "application error in GET /broken"),
    ],
)
async def test_misbehaving_app_gives_500_and_a_log_naming_the_path(
    serve: Any, caplog: pytest.LogCaptureFixture, behaviour: str, logged: str
) -> None:
    server = await serve(_app_that(behaviour))
    with caplog.at_level(logging.INFO, logger="kanal.server"):
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{server.port}/broken")
            assert response.status_code == 500
            assert (await http.get(f"http://127.0.0.1:{server.port}/ok")).status_code == 200
    assert logged in caplog.text


async def test_app_error_after_the_response_started_drops_the_connection(
    serve: Any, raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve(_app_that("raise-after-start"))
    client: RawClient = await raw(server.port)
    with caplog.at_level(logging.ERROR, logger="kanal.server"):
        await client.send(b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await client.read_all()
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert not data.endswith(b"0\r\n\r\n")  # the chunked body was never terminated
    assert "application error in GET /broken" in caplog.text


async def test_send_after_the_client_left_is_logged_not_raised_further(
    serve: Any, raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    left = asyncio.Event()
    finished = asyncio.Event()
    raised: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        left.set()
        try:
            await send({"type": "http.response.body", "body": b"b", "more_body": True})
        except OSError as exc:
            raised.append(exc)
            raise
        finally:
            finished.set()

    server = await serve(app)
    client: RawClient = await raw(server.port)
    with caplog.at_level(logging.INFO, logger="kanal.server"):
        await client.send(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.reader.readuntil(b"\r\n\r\n")
        await client.close()
        await asyncio.wait_for(finished.wait(), 5)
    assert left.is_set()
    assert raised and isinstance(raised[0], OSError)
    assert "kept sending after the client left" in caplog.text
    assert "Traceback" not in caplog.text
