"""Drive an ``mqtt`` application without a broker: deliver messages, read what it sends."""

# The ``timeout=`` parameters follow the other communicators (asgiref's API).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from kanal.testing._communicators import ApplicationCommunicator
from kanal.typing import ASGIApp, Message

__all__ = ["MqttCommunicator"]

_KINDS = ("mqtt.publish", "mqtt.subscribe", "mqtt.unsubscribe", "mqtt.ack")


class MqttCommunicator(ApplicationCommunicator):
    """Plays ``kanal mqtt`` for one application instance, with no broker.

    ::

        communicator = MqttCommunicator(Readings.as_asgi(channel_layer=channel_layer))
        await communicator.connect()
        assert await communicator.receive_subscribe() == {"topic": "sensors/+", "qos": 1, ...}
        ack_id = await communicator.send_message("sensors/a", b"21.5", qos=1)
        await communicator.receive_ack(ack_id)          # handled
        publish = await communicator.receive_publish()  # what it published
        await communicator.disconnect()

    What the application sends is sorted by type, so waiting for an acknowledgement
    does not lose a publish sent before it. :attr:`subscriptions` holds the topic filters
    the application is subscribed to now, with their QoS.
    """

    def __init__(
        self,
        application: ASGIApp,
        *,
        client_id: str = "kanal-test",
        mqtt_version: str = "5",
        scope: dict[str, Any] | None = None,
    ) -> None:
        full: dict[str, Any] = {
            "type": "mqtt",
            "asgi": {"version": "3.0", "spec_version": "1.0"},
            "broker": ("127.0.0.1", 1883),
            "tls": False,
            "client_id": client_id,
            "mqtt_version": mqtt_version,
            "clean_session": True,
        }
        full.update(scope or {})
        super().__init__(application, full)
        self.subscriptions: dict[str, int] = {}
        self._sorted: dict[str, deque[Message]] = {kind: deque() for kind in _KINDS}
        self._next_id = 0

    async def connect(self, *, session_present: bool = False) -> None:
        """Send ``mqtt.connect``, as the server does once connected to the broker."""
        await self.send_input({"type": "mqtt.connect", "session_present": session_present})

    async def send_message(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 0,
        retain: bool = False,
        duplicate: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> int | None:
        """Deliver a broker message; returns the id to acknowledge it with (``None``: QoS 0)."""
        ack_id = None
        if qos:
            self._next_id += 1
            ack_id = self._next_id
        await self.send_input(
            {
                "type": "mqtt.message",
                "topic": topic,
                "payload": payload.encode() if isinstance(payload, str) else payload,
                "qos": qos,
                "retain": retain,
                "duplicate": duplicate,
                "id": ack_id,
                "properties": properties or {},
            }
        )
        return ack_id

    async def _next(self, kind: str, timeout: float) -> Message:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._sorted[kind]:
            event = await self.receive_output(max(0.0, deadline - loop.time()))
            if event.get("type") not in self._sorted:
                raise AssertionError(f"the application sent an event mqtt has not: {event!r}")
            if event["type"] == "mqtt.subscribe":
                self.subscriptions[event["topic"]] = event.get("qos", 0)
            elif event["type"] == "mqtt.unsubscribe":
                self.subscriptions.pop(event["topic"], None)
            self._sorted[event["type"]].append(event)
        return self._sorted[kind].popleft()

    async def receive_publish(self, timeout: float = 1) -> Message:
        """The next ``mqtt.publish`` event (``topic``, ``payload``, ``qos``, ``retain``...)."""
        return await self._next("mqtt.publish", timeout)

    async def receive_subscribe(self, timeout: float = 1) -> Message:
        """The next ``mqtt.subscribe`` event."""
        return await self._next("mqtt.subscribe", timeout)

    async def receive_unsubscribe(self, timeout: float = 1) -> Message:
        """The next ``mqtt.unsubscribe`` event."""
        return await self._next("mqtt.unsubscribe", timeout)

    async def receive_ack(self, ack_id: int | None = None, timeout: float = 1) -> int:
        """Wait for the next acknowledgement (it must be ``ack_id``'s if given); its id."""
        event = await self._next("mqtt.ack", timeout)
        if ack_id is not None and event.get("id") != ack_id:
            raise AssertionError(f"expected the ack of message {ack_id}, got {event!r}")
        return int(event["id"])

    async def disconnect(self, timeout: float = 1) -> None:
        """Send ``mqtt.disconnect`` (shutdown) and wait for the application to return."""
        await self.send_input({"type": "mqtt.disconnect"})
        await self.wait(timeout)
