"""The original channels API (channels 1.x) on kanal's machinery.

Function consumers routed by channel name, each receiving a ``message`` with its
``reply_channel``; groups of reply channels whose broadcasts the servers write themselves::

    from kanal.classic import Group, route

    def ws_connect(message):
        Group("chat").add(message.reply_channel)

    def ws_message(message):
        Group("chat").send({"text": message["text"]})

    def ws_disconnect(message):
        Group("chat").discard(message.reply_channel)

    routing = [
        route("websocket.connect", ws_connect),
        route("websocket.receive", ws_message),
        route("websocket.disconnect", ws_disconnect),
    ]

``kanal serve module:routing`` runs it in-process; ``kanal serve --bridge`` with
``kanal worker --bridge module:routing`` runs it decoupled, as ``runworker`` did.
See docs/classic.md.
"""

from kanal.classic._app import ClassicApplication, application_from_environment
from kanal.classic._channels import Channel, Group, Message, ReplyChannel
from kanal.classic._consumer import WebsocketConsumer
from kanal.classic._routing import Route, is_routing, route, route_class

__all__ = [
    "Channel",
    "ClassicApplication",
    "Group",
    "Message",
    "ReplyChannel",
    "Route",
    "WebsocketConsumer",
    "application_from_environment",
    "is_routing",
    "route",
    "route_class",
]
