"""Real frameworks served by kanal: a Django project and a Starlette app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets


@pytest.fixture
def django_app(django_settings: None) -> Any:
    from django.core.asgi import get_asgi_application
    from django.test import override_settings

    with override_settings(ROOT_URLCONF="tests.server.django_urls"):
        yield get_asgi_application()


async def test_django_asgi_app(serve: Any, django_app: Any) -> None:
    # As behind a proxy that strips "/site": requests arrive without the prefix.
    server = await serve(django_app, root_path="/site")
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient() as client:
        hello = await client.get(f"{base}/hello/")
        echo = await client.post(f"{base}/echo/?q=find", content=b"posted body")
        stream = await client.get(f"{base}/stream/")
        missing = await client.get(f"{base}/nowhere/")
    assert (hello.status_code, hello.text) == (200, "Hello from Django")
    assert echo.json() == {
        "method": "POST",
        "path": "/site/echo/",
        "script_name": "/site",
        "body": "posted body",
        "query": "find",
    }
    assert stream.text == "abc"
    assert missing.status_code == 404


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        yield {"greeting": "hello from lifespan"}

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.state.greeting)

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"body": (await request.body()).decode(), "url": str(request.url)})

    async def numbers(request: Request) -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"{i}\n".encode()

        return StreamingResponse(gen(), media_type="text/plain")

    async def ws_echo(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="echo")
        async for text in websocket.iter_text():
            await websocket.send_text(text.upper())

    return Starlette(
        routes=[
            Route("/", home),
            Route("/echo", echo, methods=["POST"]),
            Route("/numbers", numbers),
            WebSocketRoute("/ws", ws_echo),
        ],
        lifespan=lifespan,
    )


async def test_starlette_app(serve: Any) -> None:
    server = await serve(starlette_app())
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient() as client:
        home = await client.get(f"{base}/")
        echo = await client.post(f"{base}/echo?x=1", content=b"data")
        numbers = await client.get(f"{base}/numbers")
    assert home.text == "hello from lifespan"
    assert echo.json() == {"body": "data", "url": f"{base}/echo?x=1"}
    assert numbers.text == "0\n1\n2\n3\n4\n"
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws", subprotocols=["echo"]) as ws:
        assert ws.subprotocol == "echo"
        await ws.send("shout")
        assert await ws.recv() == "SHOUT"
