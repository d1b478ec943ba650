"""Small ASGI applications the server tests run."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every HTTP request with a fixed body; echoes WebSocket messages."""
    if scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"Hello, world!"})
    elif scope["type"] == "websocket":
        await echo_ws(scope, receive, send)


async def echo_ws(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accepts and echoes every message until the client leaves."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send(
            {"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")}
        )


async def scope_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the scope (as JSON) and the whole request body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    shown = {k: v for k, v in scope.items() if k not in ("headers", "state", "asgi")}
    for key in ("raw_path", "query_string"):
        shown[key] = shown[key].decode("latin-1")
    shown["headers"] = [[n.decode(), v.decode()] for n, v in scope["headers"]]
    shown["body"] = body.decode("latin-1")
    shown["state"] = sorted(scope.get("state", {}))
    data = json.dumps(shown).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def streaming(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Sends three chunks without a Content-Length."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for part in (b"one,", b"two,", b"three"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def sleeper(gate: asyncio.Event) -> Any:
    """An app whose response waits for ``gate``; the path is echoed."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    return app


async def pid_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the serving process id (to tell worker processes apart)."""
    import os

    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})


async def answer_after_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers its process id at once, and "done" once the whole request body has arrived."""
    import os

    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%d," % os.getpid(), "more_body": True})
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.body", "body": b"done"})


def make_app() -> Any:
    """A factory, for ``module:make_app()``."""
    return hello


async def logging_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Logs a line (through a logger of its own) for each request and each message."""
    log = _app_logger()
    if scope["type"] == "http":
        log.info("app answered %s", scope["path"])
        await hello(scope, receive, send)
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] != "websocket.disconnect":
        log.info("app saw %s", message["text"])
        await send({"type": "websocket.send", "text": message["text"]})


def _app_logger() -> logging.Logger:
    """An application's logger with a handler of its own (kanal serve configures only
    kanal's loggers), in kanal's JSON format: its lines carry the connection id too."""
    log = logging.getLogger("tests.app")
    if not log.handlers:
        from kanal._logging import JsonFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    return log
