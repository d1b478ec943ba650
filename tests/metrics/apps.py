"""Applications the metrics tests serve: plain HTTP, a WebSocket echo, and a service."""

from __future__ import annotations

from typing import Any

from kanal.routing import ChannelNameRouter
from kanal.worker import service


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``GET /`` answers 200, anything else 404; a WebSocket echoes each text message."""
    if scope["type"] == "http":
        await receive()
        status = 200 if scope["path"] == "/" else 404
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok" if status == 200 else b""})
    elif scope["type"] == "websocket":
        while True:
            event = await receive()
            if event["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif event["type"] == "websocket.receive":
                await send({"type": "websocket.send", "text": event.get("text") or ""})
            else:
                return
    elif scope["type"] == "lifespan":
        while True:
            event = await receive()
            await send({"type": event["type"] + ".complete"})
            if event["type"] == "lifespan.shutdown":
                return


async def double(message: dict[str, Any]) -> dict[str, Any]:
    """A service: twice ``n``; ``n`` < 0 fails."""
    if message["n"] < 0:
        raise ValueError("negative")
    return {"n": 2 * message["n"]}


services = ChannelNameRouter({"double": service(double)})
