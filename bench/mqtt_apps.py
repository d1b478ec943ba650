"""kanal's side of ``bench.mqtt``: readings from ``kanal mqtt`` to a group of WebSockets.

The same work as ``bench.mqtt_channels``: one MQTT consumer that ``group_send``\\s every
message on ``bench/#`` to the group ``readings``, one WebSocket consumer per page in it.
"""

from __future__ import annotations

from typing import Any

from kanal.consumers import AsyncWebsocketConsumer, MqttConsumer, MqttMessage
from kanal.routing import ProtocolTypeRouter, URLRouter, path

GROUP = "readings"


class Readings(MqttConsumer):
    """Every message on ``bench/#`` to the group."""

    subscriptions = [("bench/#", 1)]

    async def receive(self, message: MqttMessage) -> None:
        assert self.channel_layer is not None
        await self.channel_layer.group_send(GROUP, {"type": "reading", "text": message.text})


class Dashboard(AsyncWebsocketConsumer):
    """A page: in the group, forwards each reading."""

    groups = [GROUP]

    async def connect(self) -> None:
        await self.accept()

    async def reading(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


async def ok(scope: Any, receive: Any, send: Any) -> None:
    """Answers every HTTP request with 200 (the benchmark's readiness probe)."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


application = ProtocolTypeRouter(
    {
        "http": ok,
        "websocket": URLRouter([path("ws/readings/", Dashboard.as_asgi())]),
        "mqtt": Readings.as_asgi(),
    }
)
