"""Applications the process tests run under ``kanal worker`` (imported by name)."""

from __future__ import annotations

import os
from typing import Any

from kanal.consumers import AsyncConsumer, AsyncWebsocketConsumer
from kanal.routing import ChannelNameRouter, ProtocolTypeRouter
from kanal.worker import Every, Job, service

PID = os.getpid()


class Jobs(AsyncConsumer):
    """A background task: reports each job to the channel the job names."""

    async def job_run(self, message: dict[str, Any]) -> None:
        await self.channel_layer.send(
            message["report_to"], {"type": "job.done", "n": message["n"], "pid": PID}
        )


async def whoami(message: dict[str, Any]) -> dict[str, Any]:
    if message.get("fail"):
        raise LookupError(f"no such thing: {message['fail']}")
    return {"pid": PID, "echo": message.get("payload")}


tasks = ChannelNameRouter({"jobs": Jobs.as_asgi(), "whoami": service(whoami)})


class Echo(AsyncWebsocketConsumer):
    groups = ["echoers"]

    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"{text_data}:{PID}")


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    body = f"hello from {PID}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


web = ProtocolTypeRouter({"websocket": Echo.as_asgi(), "http": hello})


#: For ``kanal scheduler worker_apps`` (the module alone means its ``jobs``).
jobs = [Job("beat", "beats", {"type": "beat"}, Every(0.2))]
