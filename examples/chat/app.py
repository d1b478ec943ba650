"""The chat application: pages over HTTP, one WebSocket per tab, rooms as layer groups."""

from __future__ import annotations

import os

from kanal.middleware import AllowedOriginsMiddleware
from kanal.routing import ProtocolTypeRouter, URLRouter, path

from .consumers import ChatConsumer, PageConsumer

#: Origins whose pages may open the chat's WebSocket (comma-separated in the environment).
#: Loopback on any port by default, which covers ``make demo`` and the tests.
ALLOWED_ORIGINS = [
    origin.strip()
    for origin in os.environ.get(
        "CHAT_ALLOWED_ORIGINS", "http://127.0.0.1:*,http://localhost:*"
    ).split(",")
    if origin.strip()
]

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                path("", PageConsumer.as_asgi()),
                path("rooms/<slug:room>/", PageConsumer.as_asgi()),
                path("static/chat.js", PageConsumer.as_asgi(file_name="chat.js")),
                path("static/chat.css", PageConsumer.as_asgi(file_name="chat.css")),
            ]
        ),
        "websocket": AllowedOriginsMiddleware(
            URLRouter([path("ws/chat/<slug:room>/", ChatConsumer.as_asgi())]),
            ALLOWED_ORIGINS,
        ),
    }
)
