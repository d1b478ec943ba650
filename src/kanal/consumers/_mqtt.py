"""The consumer for ``mqtt`` scopes: broker messages to a handler, the layer as everywhere.

It lives with the other consumers, not in :mod:`kanal.mqtt`, because it needs no MQTT
client: it speaks the ``mqtt`` ASGI events only (as WebSocket consumers speak
``websocket.*`` without the server), so it is usable and testable without the ``mqtt``
extra, and the interface server in :mod:`kanal.mqtt` does not import the framework.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from kanal.consumers._base import AsyncConsumer
from kanal.exceptions import StopConsumer
from kanal.typing import Message

__all__ = ["MqttConsumer", "MqttMessage"]

logger = logging.getLogger("kanal.consumers")


@dataclass(frozen=True)
class MqttMessage:
    """One message from the broker, as :meth:`MqttConsumer.receive` gets it."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    #: The broker sent it before (QoS 1 is at-least-once): it may have been handled.
    duplicate: bool = False
    #: MQTT 5 properties: ``content_type``, ``response_topic``, ``correlation_data``,
    #: ``message_expiry_interval``, ``payload_format_indicator``, ``user_properties``.
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode()

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)

    @classmethod
    def from_event(cls, event: Message) -> MqttMessage:
        """The message of an ``mqtt.message`` event."""
        return cls(
            topic=event["topic"],
            payload=event["payload"],
            qos=event.get("qos", 0),
            retain=event.get("retain", False),
            duplicate=event.get("duplicate", False),
            properties=event.get("properties") or {},
        )


class MqttConsumer(AsyncConsumer):
    """A consumer for the ``mqtt`` scope of ``kanal mqtt`` (one instance per process).

    ::

        class Readings(MqttConsumer):
            subscriptions = [("sensors/+/temperature", 1)]
            groups = ["dashboard"]

            async def receive(self, message):
                await self.channel_layer.group_send(
                    "dashboard", {"type": "reading", "topic": message.topic,
                                  "value": message.json()})

            async def device_command(self, event):       # a layer message
                await self.publish(f"devices/{event['device']}/command", event["command"])

    Messages are handled concurrently, at most :attr:`max_concurrency` at once, and in
    order within a topic. When all slots are busy the consumer takes no more, which holds
    the server and the broker back (backpressure). A handler that raises is logged with
    the topic and the message is acknowledged all the same (it would fail again); the
    other messages go on. Layer messages go to handlers by ``type``, as in any consumer,
    and a failing one is logged without stopping the consumer.
    """

    #: Topic filters subscribed on connect: ``"a/b"`` (QoS 0) or ``("a/+", 1)``.
    subscriptions: list[str | tuple[str, int]] = []
    #: Groups joined on connect (and left at shutdown).
    groups: list[str] = []
    #: Messages handled at once. Within one topic, always one after the other.
    max_concurrency: int = 16

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._slots = asyncio.Semaphore(self.max_concurrency)
        # topic -> the task of its latest message, which the next one on it waits for
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._running: set[asyncio.Task[None]] = set()

    # -- the hooks -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Called once the server is connected, after the declared subscriptions."""

    async def receive(self, message: MqttMessage) -> None:
        """Handle one message from the broker."""

    async def disconnect(self) -> None:
        """Called at shutdown, once the messages in progress are done."""

    # -- what the consumer can send ----------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes | str | Any,
        qos: int = 0,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Publish ``payload`` (bytes, str, or anything else as JSON) to ``topic``.

        Returns once the broker has it (QoS 1/2: acknowledged); while the broker is away,
        it waits for the reconnection.
        """
        if not isinstance(payload, bytes | str):
            payload = json.dumps(payload, separators=(",", ":"))
        event: dict[str, Any] = {
            "type": "mqtt.publish",
            "topic": topic,
            "payload": payload,
            "qos": qos,
            "retain": retain,
        }
        if properties:
            event["properties"] = properties
        await self.send(event)

    async def subscribe(self, topic: str, qos: int = 0, *, no_local: bool = False) -> None:
        """Subscribe to a topic filter (``$share/GROUP/FILTER`` to share it with others)."""
        await self.send(
            {"type": "mqtt.subscribe", "topic": topic, "qos": qos, "no_local": no_local}
        )

    async def unsubscribe(self, topic: str) -> None:
        """Remove a subscription."""
        await self.send({"type": "mqtt.unsubscribe", "topic": topic})

    # -- the protocol handlers -------------------------------------------------------------

    async def mqtt_connect(self, event: Message) -> None:
        """The server is connected: join groups, subscribe, then :meth:`connect`."""
        await self._join_declared_groups(list(self.groups))
        for entry in self.subscriptions:
            topic, qos = (entry, 0) if isinstance(entry, str) else entry
            await self.subscribe(topic, qos)
        await self.connect()

    async def mqtt_message(self, event: Message) -> None:
        """Start handling one message, waiting for a free slot first."""
        await self._slots.acquire()
        topic = event["topic"]
        before = self._tails.get(topic)
        task = asyncio.ensure_future(self._handle_message(event, before))
        self._tails[topic] = task
        self._running.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._running.discard(done)
            self._slots.release()
            if self._tails.get(topic) is done:
                del self._tails[topic]

        task.add_done_callback(finished)

    async def _handle_message(self, event: Message, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait({before})  # order within a topic
        try:
            await self.receive(MqttMessage.from_event(event))
        except Exception as exc:
            logger.error(
                "%s failed on the MQTT message on topic %r: %s",
                type(self).__name__,
                event.get("topic"),
                exc,
                exc_info=exc,
                extra={"topic": event.get("topic")},
            )
        if event.get("id") is not None:
            await self.send({"type": "mqtt.ack", "id": event["id"]})

    async def mqtt_disconnect(self, event: Message) -> None:
        """Shutdown: let the handlers in progress finish (within the deadline), then stop."""
        running = set(self._running)
        if running:
            _, late = await asyncio.wait(running, timeout=self.disconnect_timeout)
            for task in late:
                task.cancel()
        await self.run_with_deadline("disconnect", self.disconnect)
        raise StopConsumer

    async def _handle(self, message: Message) -> bool:
        # One consumer serves every message of the process: a failing layer handler is
        # logged (by _fail) and the consumer goes on, instead of ending as a connection's
        # consumer would.
        try:
            await self.dispatch(message)
        except StopConsumer:
            return False
        except Exception as exc:
            await self._fail(exc, message)
        return True

    async def _cleanup(self) -> None:
        for task in list(self._running):
            task.cancel()
        await super()._cleanup()
