"""A chat in the original channels API (kanal.classic): function consumers and a Group.

Run it in-process::

    kanal serve examples.classic_chat:routing

or decoupled, the original "runworker" model (a shared layer, e.g. Redis)::

    export KANAL_LAYER=redis://localhost:6379/0
    kanal serve --bridge
    kanal worker --bridge examples.classic_chat:routing

Connect to ``ws://127.0.0.1:8000/chat/<room>/``: every line sent is written to everyone in
the room by the servers themselves, encoded once. ``/shout/`` is the same room with a
class-based consumer.
"""

from __future__ import annotations

from typing import Any

from kanal.classic import Group, Message, WebsocketConsumer, route, route_class


def ws_connect(message: Message, room: str) -> None:
    """Join the room; returning without closing accepts the connection."""
    if room == "closed":
        message.reply_channel.send({"close": True})  # type: ignore[union-attr]
        return
    Group(f"chat-{room}").add(message.reply_channel)  # type: ignore[arg-type]


def ws_message(message: Message, room: str) -> None:
    """A line: to everyone in the room."""
    Group(f"chat-{room}").send({"text": message["text"]})


def ws_disconnect(message: Message, room: str) -> None:
    """Leave the room."""
    Group(f"chat-{room}").discard(message.reply_channel)  # type: ignore[arg-type]


class Shout(WebsocketConsumer):
    """The lobby, in capitals: groups joined on connect, left on disconnect."""

    def connection_groups(self, **kwargs: Any) -> list[str]:
        return ["chat-lobby"]

    def connect(self, message: Message, **kwargs: Any) -> None:
        self.send(text="welcome, shouter")

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        self.group_send("chat-lobby", text=(text or "").upper())


CHAT = r"^/chat/(?P<room>[-\w]+)/$"

routing = [
    route("websocket.connect", ws_connect, path=CHAT),
    route("websocket.receive", ws_message, path=CHAT),
    route("websocket.disconnect", ws_disconnect, path=CHAT),
    route_class(Shout, path=r"^/shout/$"),
]
