"""The ASGI application Daphne serves: a 200 for any HTTP request, the chat on WebSocket."""

from __future__ import annotations

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.channels_chat.settings")
django.setup()

# Imported after django.setup(): Channels reads the settings when its modules load.
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import re_path  # noqa: E402

from bench.channels_chat.consumers import ChatConsumer, FanoutConsumer  # noqa: E402


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every HTTP request with 200 (the benchmark's readiness probe)."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


# The origin check mirrors examples.chat's (only pages of the allowed hosts may connect).
application = ProtocolTypeRouter(
    {
        "http": ok,
        "websocket": AllowedHostsOriginValidator(
            URLRouter(
                [
                    re_path(r"^ws/chat/(?P<room>[-\w]+)/$", ChatConsumer.as_asgi()),
                    re_path(r"^ws/fanout/(?P<room>[-\w]+)/$", FanoutConsumer.as_asgi()),
                ]
            )
        ),
    }
)
