"""Routers: by scope type, by URL path and by channel name.

::

    from kanal.routing import ProtocolTypeRouter, URLRouter, path

    application = ProtocolTypeRouter({
        "websocket": URLRouter([path("ws/chat/<slug:room>/", ChatConsumer.as_asgi())]),
    })
"""

from kanal.exceptions import RouteNotFound
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
    "ChannelNameRouter",
    "Converter",
    "IntConverter",
    "PathConverter",
    "ProtocolTypeRouter",
    "Route",
    "RouteNotFound",
    "SlugConverter",
    "StrConverter",
    "URLRouter",
    "UUIDConverter",
    "path",
    "re_path",
    "register_converter",
    "reject_scope",
]
