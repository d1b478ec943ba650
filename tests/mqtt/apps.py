"""Applications the MQTT tests run in a ``kanal mqtt`` child process."""

from __future__ import annotations

from kanal.consumers import MqttConsumer, MqttMessage
from kanal.routing import ProtocolTypeRouter


class Echo(MqttConsumer):
    """Republishes what comes on ``in/#`` to ``out/...``, with the process's client id."""

    subscriptions = [("in/#", 1)]

    async def receive(self, message: MqttMessage) -> None:
        await self.publish(
            "out/" + message.topic, f"{self.scope['client_id']}:{message.text}", qos=1
        )


echo = ProtocolTypeRouter({"mqtt": Echo.as_asgi()})
