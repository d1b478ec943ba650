"""The ``mqtt`` ASGI protocol: broker messages as events, and the application's events checked.

Events to the application: ``mqtt.connect`` (once, when first connected),
``mqtt.message`` (one per message) and ``mqtt.disconnect`` (at shutdown). Events from it:
``mqtt.subscribe``, ``mqtt.unsubscribe``, ``mqtt.publish`` and ``mqtt.ack``. The keys are
described in ``docs/mqtt.md``; this module is the one place that builds and checks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from kanal.exceptions import MqttError
from kanal.typing import Message

__all__ = [
    "Publish",
    "Subscribe",
    "message_event",
    "parse_publish",
    "parse_subscribe",
    "require_topic",
]

# MQTT 5 message properties an application may read and set, by event key.
_PROPERTIES = {
    "content_type": "ContentType",
    "response_topic": "ResponseTopic",
    "correlation_data": "CorrelationData",
    "message_expiry_interval": "MessageExpiryInterval",
    "payload_format_indicator": "PayloadFormatIndicator",
}


def message_event(message: paho.MQTTMessage, ack_id: int | None) -> Message:
    """The ``mqtt.message`` event for a message from the broker."""
    event: dict[str, Any] = {
        "type": "mqtt.message",
        "topic": message.topic,
        "payload": bytes(message.payload),
        "qos": message.qos,
        "retain": bool(message.retain),
        # True when the broker sent it before (after a reconnection): it may have been
        # handled already, as QoS 1 is at-least-once.
        "duplicate": bool(message.dup),
        "id": ack_id,
        "properties": _read_properties(getattr(message, "properties", None)),
    }
    return event


def _read_properties(properties: Properties | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if properties is None:
        return found
    for key, attribute in _PROPERTIES.items():
        value = getattr(properties, attribute, None)
        if value is not None:
            found[key] = bytes(value) if isinstance(value, bytes | bytearray) else value
    user = getattr(properties, "UserProperty", None)
    if user:
        found["user_properties"] = [[str(name), str(value)] for name, value in user]
    return found


def require_topic(event: Message, *, wildcards: bool) -> str:
    """The event's ``topic``, checked as MQTT requires (UTF-8, no NUL, wildcards placed)."""
    topic = event.get("topic")
    if not isinstance(topic, str) or not topic:
        raise MqttError(f"{event.get('type')} needs a non-empty str 'topic', not {topic!r}")
    if "\0" in topic or len(topic.encode()) > 65_535:
        raise MqttError(f"{event.get('type')}: topic {topic!r} has a NUL or is too long")
    if not wildcards and ("+" in topic or "#" in topic):
        raise MqttError(f"cannot publish to {topic!r}: wildcards belong in subscriptions")
    if wildcards:
        levels = topic.split("/")
        for index, level in enumerate(levels):
            if "#" in level and (level != "#" or index != len(levels) - 1):
                raise MqttError(f"topic filter {topic!r}: '#' must be a whole last level")
            if "+" in level and level != "+":
                raise MqttError(f"topic filter {topic!r}: '+' must be a whole level")
    return topic


def _qos(event: Message) -> int:
    qos = event.get("qos", 0)
    if qos not in (0, 1, 2) or isinstance(qos, bool):
        raise MqttError(f"{event.get('type')}: qos must be 0, 1 or 2, not {qos!r}")
    return int(qos)


@dataclass(frozen=True)
class Subscribe:
    """A subscription the application asked for, as it is sent again after a reconnection."""

    topic: str
    qos: int
    no_local: bool = False

    def options(self, mqtt5: bool) -> SubscribeOptions | None:
        """paho's options for it (MQTT 5 only; 3.1.1 has none)."""
        if not mqtt5:
            return None
        # Retained messages only for a new subscription, so that subscribing again after
        # a reconnection does not send them twice (MQTT 5, 3.8.3.1).
        return SubscribeOptions(
            qos=self.qos,
            noLocal=self.no_local,
            retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB,
        )


def parse_subscribe(event: Message) -> Subscribe:
    """Check an ``mqtt.subscribe`` event."""
    topic = require_topic(event, wildcards=True)
    if topic.startswith("$share/") and topic.count("/") < 2:
        raise MqttError(f"shared subscription {topic!r} must be $share/GROUP/FILTER")
    return Subscribe(topic, _qos(event), bool(event.get("no_local", False)))


@dataclass(frozen=True)
class Publish:
    """A checked ``mqtt.publish`` event."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None


def parse_publish(event: Message, mqtt5: bool) -> Publish:
    """Check an ``mqtt.publish`` event: ``payload`` is bytes or str (sent as UTF-8)."""
    topic = require_topic(event, wildcards=False)
    payload = event.get("payload", b"")
    if isinstance(payload, str):
        payload = payload.encode()
    elif isinstance(payload, bytearray | memoryview):
        payload = bytes(payload)
    if not isinstance(payload, bytes):
        raise MqttError(f"mqtt.publish: payload must be bytes or str, not {type(payload).__name__}")
    given = event.get("properties") or {}
    if not isinstance(given, dict):
        raise MqttError("mqtt.publish: properties must be a dict")
    unknown = set(given) - set(_PROPERTIES) - {"user_properties"}
    if unknown:
        raise MqttError(f"mqtt.publish: unknown properties {sorted(unknown)}")
    if given and not mqtt5:
        raise MqttError("mqtt.publish: properties need MQTT 5 (this connection is 3.1.1)")
    properties = None
    if given:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        for key, value in given.items():
            if key == "user_properties":
                properties.UserProperty = [(str(name), str(v)) for name, v in value]
            else:
                setattr(properties, _PROPERTIES[key], value)
    return Publish(topic, payload, _qos(event), bool(event.get("retain", False)), properties)
