"""Readings from MQTT (mqttasgi's consumer) to a group of WebSockets (a Channels consumer)."""

from __future__ import annotations

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.mqtt_channels.settings")
django.setup()

# Imported after django.setup(): Channels reads the settings when its modules load.
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402
from mqttasgi.consumers import MqttConsumer  # noqa: E402

GROUP = "readings"


class Readings(MqttConsumer):  # type: ignore[misc]
    """Every message on ``bench/#`` to the group, as the mqttasgi README writes consumers."""

    async def connect(self) -> None:
        await self.subscribe("bench/#", 1)

    async def receive(self, mqtt_message: dict[str, Any]) -> None:
        payload = mqtt_message["payload"]
        text = payload.decode() if isinstance(payload, bytes) else str(payload)
        await self.channel_layer.group_send(GROUP, {"type": "reading", "text": text})

    async def disconnect(self) -> None:
        await self.unsubscribe("bench/#")


class Dashboard(AsyncWebsocketConsumer):  # type: ignore[misc]
    """A page: joins the group, forwards each reading."""

    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def reading(self, event: dict[str, Any]) -> None:
        await self.send(event["text"])


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every HTTP request with 200 (the benchmark's readiness probe)."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


application = ProtocolTypeRouter(
    {
        "http": ok,
        "websocket": URLRouter([re_path(r"^ws/readings/$", Dashboard.as_asgi())]),
        "mqtt": Readings.as_asgi(),
    }
)
