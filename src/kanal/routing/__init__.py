"""Routers: by scope type, by URL path and by channel name.

::

    from kanal.routing import ProtocolTypeRouter, URLRouter, path

    application = ProtocolTypeRouter({
        "websocket": URLRouter([path("ws/chat/<slug:room>/", ChatConsumer.as_asgi())]),
    })
"""

from kanal.exceptions import RouteNotFound
from kanal.routing._asgi import ASGIApp, Message, Receive, Scope, Send, header_value
from kanal.routing._protocol import ChannelNameRouter, ProtocolTypeRouter, reject_scope
from kanal.routing._url import (
    Converter,
    IntConverter,
    PathConverter,
    Route,
    SlugConverter,
    StrConverter,
    URLRouter,
    UUIDConverter,
    path,
    re_path,
    register_converter,
)

__all__ = [
    "ASGIApp",
    "ChannelNameRouter",
    "Converter",
    "IntConverter",
    "Message",
    "PathConverter",
    "ProtocolTypeRouter",
    "Receive",
    "Route",
    "RouteNotFound",
    "Scope",
    "Send",
    "SlugConverter",
    "StrConverter",
    "URLRouter",
    "UUIDConverter",
    "header_value",
    "path",
    "re_path",
    "register_converter",
    "reject_scope",
]
