"""The class-based consumer of the original channels API: one instance per message."""

from __future__ import annotations

from typing import Any, ClassVar

from kanal.classic._channels import Group, Message

__all__ = ["WebsocketConsumer"]


class WebsocketConsumer:
    """A WebSocket consumer as channels 1.x had it, routed with ``route_class``.

    A new instance handles each message (``self.message``, ``self.kwargs``, the path's
    named groups). The groups of :meth:`connection_groups` are joined on connect and left
    on disconnect; :meth:`group_send` broadcasts to one through the servers' direct path.
    ::

        class Chat(WebsocketConsumer):
            def connection_groups(self, **kwargs):
                return ["chat"]

            def receive(self, text=None, bytes=None, **kwargs):
                self.group_send("chat", text=text)
    """

    #: Channel name -> method, what ``route_class`` routes.
    method_mapping: ClassVar[dict[str, str]] = {
        "websocket.connect": "raw_connect",
        "websocket.receive": "raw_receive",
        "websocket.disconnect": "raw_disconnect",
    }
    #: The groups of every connection (or override :meth:`connection_groups`).
    groups: ClassVar[list[str] | None] = None

    def __init__(self, message: Message, **kwargs: Any) -> None:
        self.message = message
        self.kwargs = kwargs

    @classmethod
    def as_route_consumer(cls) -> Any:
        """The function a route calls: a new instance, then its method for the channel."""

        def consume(message: Message, **kwargs: Any) -> None:
            instance = cls(message, **kwargs)
            getattr(instance, cls.method_mapping[message.channel])(message, **kwargs)

        consume.__name__ = consume.__qualname__ = f"{cls.__name__}.consume"
        return consume

    # What the routes call.

    def raw_connect(self, message: Message, **kwargs: Any) -> None:
        """Join :meth:`connection_groups`, then :meth:`connect`."""
        for group in self.connection_groups(**kwargs):
            Group(group).add(message.reply_channel)  # type: ignore[arg-type]
        self.connect(message, **kwargs)

    def raw_receive(self, message: Message, **kwargs: Any) -> None:
        """Pass the frame to :meth:`receive`."""
        self.receive(text=message.get("text"), bytes=message.get("bytes"), **kwargs)

    def raw_disconnect(self, message: Message, **kwargs: Any) -> None:
        """Leave :meth:`connection_groups`, then :meth:`disconnect`."""
        for group in self.connection_groups(**kwargs):
            Group(group).discard(message.reply_channel)  # type: ignore[arg-type]
        self.disconnect(message, **kwargs)

    # What a subclass overrides.

    def connection_groups(self, **kwargs: Any) -> list[str]:
        """The groups this connection belongs to (default: :attr:`groups`)."""
        return list(self.groups or [])

    def connect(self, message: Message, **kwargs: Any) -> None:
        """The handshake; returning without closing accepts it."""

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        """A frame from the client."""

    def disconnect(self, message: Message, **kwargs: Any) -> None:
        """The connection closed (the groups were left already)."""

    # What a subclass calls.

    def send(
        self, text: str | None = None, bytes: bytes | None = None, close: bool = False
    ) -> None:
        """Send a frame to this connection (and close after it with ``close=True``)."""
        reply = self.message.reply_channel
        assert reply is not None
        content: dict[str, Any] = {}
        if text is not None:
            content["text"] = text
        elif bytes is not None:
            content["bytes"] = bytes
        if close:
            content["close"] = close
        reply.send(content)

    def close(self, code: int | bool = True) -> None:
        """Close this connection."""
        reply = self.message.reply_channel
        assert reply is not None
        reply.send({"close": code})

    @classmethod
    def group_send(
        cls,
        name: str,
        text: str | None = None,
        bytes: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Broadcast a frame (or a close) to group ``name``, written by the servers."""
        if text is not None:
            Group(name).send({"text": text})
        elif bytes is not None:
            Group(name).send({"bytes": bytes})
        if close:
            Group(name).send({"close": close})
