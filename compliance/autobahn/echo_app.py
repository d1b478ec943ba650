"""A bare ASGI 3 WebSocket echo application, served under test by Autobahn|Testsuite.

It echoes every message with its type (text as text, binary as binary), answers plain HTTP
with a short 404 and accepts the lifespan protocol, so every server under test runs it the
same way. It uses no framework, so what the fuzzing client measures is the server alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo WebSocket messages; 404 for HTTP; acknowledge lifespan events."""
    if scope["type"] == "websocket":
        while True:
            event = await receive()
            if event["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif event["type"] == "websocket.receive":
                # An empty text frame arrives as text="" (not None): check for None explicitly,
                # or empty messages would never be echoed (Autobahn cases 1.1.1 and 1.2.1).
                if event.get("text") is not None:
                    await send({"type": "websocket.send", "text": event["text"]})
                else:
                    await send({"type": "websocket.send", "bytes": event.get("bytes") or b""})
            elif event["type"] == "websocket.disconnect":
                return
    elif scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"10")],
            }
        )
        await send({"type": "http.response.body", "body": b"not found\n"})
    elif scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
