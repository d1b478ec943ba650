"""The sensor example's consumers: one for the broker, one per browser tab, one for the page.

The two protocols meet in the channel layer: readings go from the MQTT consumer to the
group ``sensors``, whose members are the tabs' WebSocket consumers; a tab's command goes to
the group ``sensor-commands``, whose member is the MQTT consumer, which publishes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kanal.consumers import AsyncHttpConsumer, AsyncJsonWebsocketConsumer, MqttConsumer, MqttMessage

STATIC = Path(__file__).parent / "static"

#: Topics: ``sensors/<id>/reading`` (JSON, QoS 0: the next one is a second away),
#: ``sensors/<id>/state`` (retained JSON, QoS 1) and ``sensors/<id>/command`` (QoS 1).
READINGS = "sensors/+/reading"
STATES = "sensors/+/state"
READINGS_GROUP = "sensors"
COMMANDS_GROUP = "sensor-commands"


class SensorBridge(MqttConsumer):
    """The broker's side: readings and states to the page's group, commands to devices."""

    subscriptions = [(READINGS, 0), (STATES, 1)]
    groups = [COMMANDS_GROUP]

    async def receive(self, message: MqttMessage) -> None:
        _, device, kind = message.topic.split("/")
        assert self.channel_layer is not None
        await self.channel_layer.group_send(
            READINGS_GROUP, {"type": f"sensor.{kind}", "device": device, "data": message.json()}
        )

    async def device_command(self, event: dict[str, Any]) -> None:
        """A tab asked for a command: publish it to the device's command topic."""
        await self.publish(f"sensors/{event['device']}/command", event["command"], qos=1)


class Dashboard(AsyncJsonWebsocketConsumer):
    """One browser tab: readings and states in, commands out."""

    groups = [READINGS_GROUP]

    async def connect(self) -> None:
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        device, command = content.get("device"), content.get("command")
        if not isinstance(device, str) or command not in ("led on", "led off"):
            await self.send_json({"error": "commands are 'led on' and 'led off'"})
            return
        assert self.channel_layer is not None
        await self.channel_layer.group_send(
            COMMANDS_GROUP, {"type": "device.command", "device": device, "command": command}
        )

    async def sensor_reading(self, event: dict[str, Any]) -> None:
        await self.send_json({"kind": "reading", "device": event["device"], **event["data"]})

    async def sensor_state(self, event: dict[str, Any]) -> None:
        await self.send_json({"kind": "state", "device": event["device"], **event["data"]})


class Page(AsyncHttpConsumer):
    """The page (one static file)."""

    async def handle(self, body: bytes) -> None:
        await self.send_response(
            200,
            (STATIC / "index.html").read_bytes(),
            headers=[(b"content-type", b"text/html; charset=utf-8")],
        )
