"""Public test tools: the layer conformance suite, communicators, fixtures."""

from kanal.testing._communicators import (
    ApplicationCommunicator,
    HttpCommunicator,
    WebsocketCommunicator,
)
from kanal.testing._conformance import ChannelLayerConformance
from kanal.testing._redis import RedisServer, free_port

__all__ = [
    "ApplicationCommunicator",
    "ChannelLayerConformance",
    "HttpCommunicator",
    "RedisServer",
    "WebsocketCommunicator",
    "free_port",
]
