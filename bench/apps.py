"""The ASGI 3 application every server runs in ``bench.server``: hello world and echo.

HTTP requests get a fixed "Hello, world!" (the classic hello-world benchmark); WebSocket
connections are accepted and every message is echoed back with its type. Lifespan events are
acknowledged. The app uses no framework, so the figures measure the servers, not the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY = b"Hello, world!"
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
}
RESPONSE_BODY = {"type": "http.response.body", "body": BODY}
ACCEPT = {"type": "websocket.accept"}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Hello world over HTTP, echo over WebSocket, acknowledged lifespan."""
    kind = scope["type"]
    if kind == "http":
        # The body of a hello-world GET is empty; the request is not read further.
        await send(START)
        await send(RESPONSE_BODY)
    elif kind == "websocket":
        while True:
            event = await receive()
            etype = event["type"]
            if etype == "websocket.receive":
                text = event.get("text")
                if text is not None:
                    await send({"type": "websocket.send", "text": text})
                else:
                    await send({"type": "websocket.send", "bytes": event.get("bytes") or b""})
            elif etype == "websocket.connect":
                await send(ACCEPT)
            else:  # websocket.disconnect
                return
    elif kind == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
