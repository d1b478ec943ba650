"""Public test tools: the layer conformance suite, communicators, fixtures."""

from kanal.testing._auth import bearer_headers, login_headers
from kanal.testing._clock import ManualClock
from kanal.testing._communicators import (
    ApplicationCommunicator,
    HttpCommunicator,
    WebsocketCommunicator,
)
from kanal.testing._conformance import ChannelLayerConformance
from kanal.testing._live import LiveServer
from kanal.testing._mosquitto import MosquittoServer
from kanal.testing._mqtt import MqttCommunicator
from kanal.testing._presence_conformance import PresenceConformance, apply_presence_diff
from kanal.testing._redis import RedisServer, free_port

__all__ = [
    "ApplicationCommunicator",
    "ChannelLayerConformance",
    "HttpCommunicator",
    "LiveServer",
    "ManualClock",
    "MosquittoServer",
    "MqttCommunicator",
    "PresenceConformance",
    "RedisServer",
    "WebsocketCommunicator",
    "apply_presence_diff",
    "bearer_headers",
    "free_port",
    "login_headers",
]
