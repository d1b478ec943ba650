"""The application the bridge's process tests run under ``kanal worker --bridge``."""

from __future__ import annotations

import asyncio
import logging
import os

from kanal.consumers import AsyncWebsocketConsumer
from kanal.routing import ProtocolTypeRouter
from kanal.typing import Receive, Scope, Send

PID = os.getpid()


class Echo(AsyncWebsocketConsumer):
    """Answers each text with the text and this process's id."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        logging.getLogger("tests.app").info("worker saw %s", text_data)
        await self.send(text_data=f"{text_data}:{PID}")


async def http(scope: Scope, receive: Receive, send: Send) -> None:
    """``/slow`` never answers; anything else says which process answered."""
    await receive()
    if scope["path"] == "/slow":
        await asyncio.Event().wait()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"hello from {PID}".encode()})


application = ProtocolTypeRouter({"websocket": Echo.as_asgi(), "http": http})
