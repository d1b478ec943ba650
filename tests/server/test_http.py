"""HTTP/1.1 over real sockets, with httpx and with a raw TCP client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.server import apps
from tests.server.conftest import RawClient

from kanal.server import Server


async def test_hello_with_httpx(serve: Any) -> None:
    server = await serve(apps.hello)
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/")
    assert response.status_code == 200
    assert response.text == "Hello, world!"
    assert response.headers["content-length"] == "13"
    assert "date" in response.headers


async def test_http_scope_is_complete(serve: Any) -> None:
    server = await serve(apps.scope_echo, root_path="/mount")
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"http://127.0.0.1:{server.port}/caf%C3%A9/x%20y?a=1&b=%20",
            content=b"payload",
            headers={"X-Custom": "Value"},
        )
    scope = response.json()
    assert scope["type"] == "http"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "POST"
    assert scope["scheme"] == "http"
    assert scope["root_path"] == "/mount"
    assert scope["path"] == "/mount/café/x y"
    assert scope["raw_path"] == "/caf%C3%A9/x%20y"
    assert scope["query_string"] == "a=1&b=%20"
    assert ["x-custom", "Value"] in scope["headers"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", server.port]
    assert scope["body"] == "payload"
    assert scope["state"] == []


async def test_keep_alive_reuses_the_connection(serve: Any) -> None:
    server = await serve(apps.scope_echo)
    async with httpx.AsyncClient() as client:
        ports = set()
        for _ in range(3):
            response = await client.get(f"http://127.0.0.1:{server.port}/")
            ports.add(response.json()["client"][1])
    assert len(ports) == 1


async def test_chunked_request_body_streams_to_the_app(serve: Any) -> None:
    server = await serve(apps.scope_echo)

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"first ", b"second ", b"third"):
            yield part

    async with httpx.AsyncClient() as client:
        response = await client.post(f"http://127.0.0.1:{server.port}/", content=parts())
    body = response.json()
    assert ["transfer-encoding", "chunked"] in body["headers"]
    assert body["body"] == "first second third"


async def test_streamed_response_is_chunked(serve: Any, raw: Any) -> None:
    server = await serve(apps.streaming)
    client: RawClient = await raw(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await client.read_response()
    assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"one,two,three")
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/")
    assert response.content == b"one,two,three"


async def test_pipelined_requests_are_answered_in_order(serve: Any, raw: Any) -> None:
    release = {"/slow": asyncio.Event()}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] in release:
            await release[scope["path"]].wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    server = await serve(app)
    client: RawClient = await raw(server.port)
    await client.send(
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    release["/slow"].set()
    bodies = [(await client.read_response())[2] for _ in range(3)]
    assert bodies == [b"/slow", b"/fast", b"/last"]


async def test_head_gets_headers_without_body(serve: Any, raw: Any) -> None:
    server = await serve(apps.hello)
    client: RawClient = await raw(server.port)
    await client.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await client.reader.readuntil(b"\r\n\r\n")
    assert b"content-length: 13" in head
    # The next bytes are the second response, not a body for the HEAD.
    status, _, body = await client.read_response()
    assert (status, body) == (200, b"Hello, world!")


async def test_http10_request_is_answered_and_closed(serve: Any, raw: Any) -> None:
    server = await serve(apps.streaming)
    client: RawClient = await raw(server.port)
    await client.send(b"GET / HTTP/1.0\r\n\r\n")
    data = await client.read_all()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"connection: close" in head
    assert b"chunked" not in head
    assert body == b"one,two,three"


async def test_expect_100_continue(serve: Any, raw: Any) -> None:
    server = await serve(apps.scope_echo)
    client: RawClient = await raw(server.port)
    await client.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    interim = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    await client.send(b"hello")
    status, _, body = await client.read_response()
    assert status == 200
    assert json.loads(body)["body"] == "hello"


async def test_http_disconnect_reaches_the_app(serve: Any, raw: Any) -> None:
    got: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        first = await receive()
        assert first["more_body"] is True
        got.set_result(await receive())

    server = await serve(app)
    client: RawClient = await raw(server.port)
    await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
    await client.close()
    assert (await asyncio.wait_for(got, 5))["type"] == "http.disconnect"


async def test_slow_app_makes_the_server_stop_reading_the_body(serve: Any) -> None:
    gate = asyncio.Event()
    received = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal received
        if scope["type"] != "http":
            return
        await gate.wait()
        while True:
            message = await receive()
            received += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(received).encode()})

    server: Server = await serve(app, read_buffer_limit=64 * 1024)
    total = 32 * 1024 * 1024
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
    writer.write(b"x" * total)
    # The client cannot get rid of 32 MiB: the server stopped reading.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(writer.drain(), 1.0)
    (connection,) = server.state.connections
    buffered = sum(map(len, connection.active.body))  # type: ignore[attr-defined]
    assert buffered <= 2 * 64 * 1024 + 256 * 1024
    gate.set()
    await asyncio.wait_for(writer.drain(), 30)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 200")
    assert await reader.readexactly(len(str(total))) == str(total).encode()
    writer.close()


async def test_slow_client_makes_the_app_send_wait(serve: Any) -> None:
    chunk = b"y" * 65536
    count = 256  # 16 MiB
    sent = 0
    progress = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal sent
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(chunk) * count).encode())],
            }
        )
        for _ in range(count):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent += 1
            progress.set()
        await send({"type": "http.response.body", "body": b""})

    server: Server = await serve(app, write_buffer_limit=64 * 1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1024)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    # Do not read: wait until the app stops making progress.
    while True:
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), 0.5)
        except TimeoutError:
            break
    assert sent < count
    (connection,) = server.state.connections
    transport = connection.transport  # type: ignore[attr-defined]
    assert transport.get_write_buffer_size() <= 64 * 1024 + len(chunk)
    received = 0
    await reader.readuntil(b"\r\n\r\n")
    while received < len(chunk) * count:
        data = await asyncio.wait_for(reader.read(1 << 20), 10)
        assert data
        received += len(data)
    assert sent == count
    writer.close()


async def test_receive_after_the_response_gives_http_disconnect(serve: Any) -> None:
    after: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        after.set_result(await receive())

    server = await serve(app)
    async with httpx.AsyncClient() as client:  # keeps the connection open
        assert (await client.get(f"http://127.0.0.1:{server.port}/")).text == "done"
        assert (await asyncio.wait_for(after, 5))["type"] == "http.disconnect"


async def test_bad_pipelined_request_is_answered_after_the_good_ones(serve: Any, raw: Any) -> None:
    server = await serve(apps.scope_echo)
    client: RawClient = await raw(server.port)
    await client.send(
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GARBAGE\r\n\r\n"
    )
    first = await client.read_response()
    second = await client.read_response()
    assert [json.loads(r[2])["path"] for r in (first, second)] == ["/first", "/second"]
    rest = await client.read_all()
    assert rest.startswith(b"HTTP/1.1 400 ")
