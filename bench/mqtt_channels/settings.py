"""Django settings of the MQTT benchmark's Channels project: the chat's, another ASGI app."""

from __future__ import annotations

from bench.channels_chat.settings import *  # noqa: F403

ASGI_APPLICATION = "bench.mqtt_channels.asgi.application"
