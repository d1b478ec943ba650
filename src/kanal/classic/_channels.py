"""Channels, reply channels, groups and messages as the original channels API had them.

Each WebSocket has a **reply channel**: a layer channel of its own, so that any process can
reach it (``Channel(name).send({"text": ...})``), and, in the process serving the
connection, an object whose ``send`` goes straight to the socket. A **group** of reply
channels is a direct-delivery group (docs/direct.md): ``Group(name).send({"text": ...})``
is encoded once and written by each server to its members' sockets, with no consumer code
in the way, as the original interface servers did.

Consumers are plain functions run in threads: every method here is synchronous and may be
called from any thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from asgiref.sync import async_to_sync

from kanal.exceptions import InvalidMessage
from kanal.layers import BaseChannelLayer, direct_message, get_channel_layer

__all__ = ["Channel", "Group", "Message", "ReplyChannel", "reply_content_message"]

#: The layer message that carries a reply channel's content from another process.
REPLY_TYPE = "classic.reply"


def _check_content(content: dict[str, Any]) -> None:
    if not isinstance(content, dict):
        raise InvalidMessage(f"a reply is a dict like {{'text': ...}}, not {content!r}")
    known = {"text", "bytes", "close", "accept"}
    if not known & content.keys():
        raise InvalidMessage(f"a reply needs one of {sorted(known)}, not {sorted(content)}")


def reply_content_message(content: dict[str, Any]) -> dict[str, Any]:
    """The layer message that asks a reply channel's process to send ``content``."""
    _check_content(content)
    return {"type": REPLY_TYPE, "content": dict(content)}


class _Connection(Protocol):
    """What a reply channel needs from the connection it belongs to (``_app.py``)."""

    layer: BaseChannelLayer

    async def apply(self, content: dict[str, Any]) -> None:
        """Send ``content`` (``text``, ``bytes``, ``accept``, ``close``) to the socket."""

    async def subscribe(self, group: str) -> None:
        """Add this connection to ``group``."""

    async def unsubscribe(self, group: str) -> None:
        """Remove this connection from ``group``."""


def _run(function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return async_to_sync(function)(*args)


class Channel:
    """A layer channel by name: ``Channel("thumbnails").send({...})``.

    Sending to a reply channel's name from any process reaches its socket (the content is
    ``{"text": ...}``, ``{"bytes": ...}``, ``{"close": True}``); another channel gets the
    content as a message of type ``"classic.message"`` for a worker.
    """

    def __init__(self, name: str, layer: BaseChannelLayer | None = None) -> None:
        self.name = name
        self._layer = layer

    @property
    def layer(self) -> BaseChannelLayer:
        """The channel layer (``get_channel_layer()`` unless given)."""
        if self._layer is None:
            self._layer = get_channel_layer()
        return self._layer

    def send(self, content: dict[str, Any]) -> None:
        """Send ``content`` to this channel."""
        _run(self.layer.send, self.name, reply_content_message(content))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Channel) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class ReplyChannel(Channel):
    """The channel of one WebSocket, held by the process that serves it.

    ``send({"accept": True})`` accepts the handshake, ``send({"text": ...})`` or
    ``send({"bytes": ...})`` sends a frame (and accepts first, as the original servers
    did), ``send({"close": True})`` (or a close code) closes.
    """

    def __init__(self, name: str, connection: _Connection) -> None:
        super().__init__(name, connection.layer)
        self.connection = connection

    def send(self, content: dict[str, Any]) -> None:
        """Send ``content`` to the socket, directly: this process holds the connection."""
        _check_content(content)
        _run(self.connection.apply, dict(content))


class Group:
    """A named set of reply channels, and a broadcast to them written by the servers.

    ::

        Group("chat").add(message.reply_channel)
        Group("chat").send({"text": "hello"})
    """

    def __init__(self, name: str, layer: BaseChannelLayer | None = None) -> None:
        self.name = name
        self._layer = layer

    @property
    def layer(self) -> BaseChannelLayer:
        """The channel layer (``get_channel_layer()`` unless given)."""
        if self._layer is None:
            self._layer = get_channel_layer()
        return self._layer

    def add(self, channel: Channel | str) -> None:
        """Add a reply channel: its socket gets the group's broadcasts."""
        if isinstance(channel, ReplyChannel):
            _run(channel.connection.subscribe, self.name)
        else:
            # A reply channel of another process, by name: its listener writes them.
            _run(self.layer.group_add, self.name, str(channel))

    def discard(self, channel: Channel | str) -> None:
        """Remove a reply channel (nothing if it was not a member)."""
        if isinstance(channel, ReplyChannel):
            _run(channel.connection.unsubscribe, self.name)
        else:
            _run(self.layer.group_discard, self.name, str(channel))

    def send(self, content: dict[str, Any]) -> None:
        """Broadcast ``{"text": ...}``, ``{"bytes": ...}`` or ``{"close": True or code}``."""
        _run(self.layer.group_send, self.name, group_message(self.name, content))

    def __repr__(self) -> str:
        return f"<Group {self.name}>"


def group_message(group: str, content: dict[str, Any]) -> dict[str, Any]:
    """The direct broadcast for a group's ``send(content)``."""
    _check_content(content)
    if content.get("text") is not None:
        return direct_message(group, text=content["text"])
    if content.get("bytes") is not None:
        return direct_message(group, bytes_data=content["bytes"])
    close = content.get("close")
    if close:
        return direct_message(group, close=1000 if close is True else int(close))
    raise InvalidMessage(f"a group broadcast needs text, bytes or close, not {sorted(content)}")


class Message(dict[str, Any]):
    """What a consumer receives: the event's keys (``message["text"]``, ``message["path"]``)
    and ``message.reply_channel``, ``message.channel`` (the channel name it was routed by).
    """

    def __init__(
        self, content: dict[str, Any], channel: str, reply_channel: ReplyChannel | None
    ) -> None:
        super().__init__(content)
        self.channel = channel
        self.reply_channel = reply_channel

    @property
    def content(self) -> dict[str, Any]:
        """The event's keys as a plain dict (the original API's ``message.content``)."""
        return dict(self)
