"""WebSocket consumers: text/bytes and JSON, async and sync, with groups."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync

from kanal.consumers._base import AsyncConsumer, SyncConsumer, _ConsumerBase
from kanal.exceptions import (
    ConfigError,
    DenyConnection,
    InvalidFrame,
    LayerUnavailable,
    StopConsumer,
)
from kanal.layers import Position, direct_message, direct_text
from kanal.typing import Message, Send

__all__ = [
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "JsonWebsocketConsumer",
    "WebsocketConsumer",
]


Headers = Iterable[tuple[bytes | str, bytes | str]]

# The server extension of direct delivery (kanal.server's _direct.py; docs/direct.md).
_DIRECT_EXTENSION = "kanal.groups"


def _encode_headers(headers: Headers | None) -> list[tuple[bytes, bytes]]:
    def raw(value: bytes | str) -> bytes:
        return value.encode("latin-1") if isinstance(value, str) else bytes(value)

    return [(raw(name).lower(), raw(value)) for name, value in headers or ()]


def _accept_message(subprotocol: str | None, headers: Headers | None) -> Message:
    message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
    if headers:
        message["headers"] = _encode_headers(headers)
    return message


def _send_message(text_data: str | None, bytes_data: bytes | None) -> Message:
    if text_data is not None:
        return {"type": "websocket.send", "text": text_data}
    if bytes_data is not None:
        return {"type": "websocket.send", "bytes": bytes_data}
    raise ValueError("send() needs text_data or bytes_data")


def _close_message(code: int | None, reason: str | None) -> Message:
    message: Message = {"type": "websocket.close"}
    if code is not None:
        message["code"] = code
    if reason:
        message["reason"] = reason
    return message


class _WebsocketProtocol(_ConsumerBase):
    """The WebSocket event handling shared by the async and sync consumers."""

    #: Groups this connection joins before ``connect()`` and leaves on disconnect.
    groups: list[str] = []
    #: The attributes that make up a connection's state (set in ``connect()``, say), carried
    #: to the next worker when the decoupled mode hands the connection over; the next
    #: instance gets them back instead of running ``connect()`` again. Empty (the default):
    #: the next worker runs ``connect()`` again, its accept hidden from the client. Override
    #: :meth:`suspend` and :meth:`resume` for more control.
    handover_attributes: tuple[str, ...] = ()

    _accepted = False
    _closed = False
    _disconnected = False

    def _track_send(self, send: Send) -> Send:
        async def tracked(message: Message) -> None:
            await send(message)  # first: a send that raised did not accept or close
            kind = message.get("type")
            if kind == "websocket.accept":
                self._accepted = True
            elif kind == "websocket.close":
                self._closed = True

        return tracked

    # -- direct delivery (docs/direct.md) ---------------------------------------------------

    async def _subscribe_direct(self, group: str, since: Position | str | None = None) -> None:
        if _DIRECT_EXTENSION in (self.scope.get("extensions") or {}):
            subscribe: Message = {"type": "kanal.group.subscribe", "group": group}
            if since is not None:
                subscribe["since"] = str(Position.parse(since))
            await self.base_send(subscribe)
        else:
            # A server without the extension (another ASGI server, a test communicator):
            # the consumer joins the group and writes each broadcast in kanal_direct().
            await self.join_group(group, since=since)

    async def _unsubscribe_direct(self, group: str) -> None:
        if _DIRECT_EXTENSION in (self.scope.get("extensions") or {}):
            await self.base_send({"type": "kanal.group.unsubscribe", "group": group})
        else:
            await self.leave_group(group)

    async def _group_send_direct(
        self,
        group: str,
        text_data: str | None,
        bytes_data: bytes | None,
        position_field: str | None = None,
    ) -> None:
        if self.channel_layer is None:
            raise ConfigError(
                f"{type(self).__name__} cannot send to group {group!r}: it has no channel "
                "layer (uses_channel_layer is False)"
            )
        await self.channel_layer.group_send(
            group,
            direct_message(
                group, text=text_data, bytes_data=bytes_data, position_field=position_field
            ),
        )

    async def kanal_direct(self, message: Message) -> None:
        """A direct broadcast reached the consumer (no server extension): send it on."""
        text = direct_text(message).get("text")
        if text is not None:
            await self.base_send({"type": "websocket.send", "text": text})
        elif message.get("bytes") is not None:
            await self.base_send({"type": "websocket.send", "bytes": message["bytes"]})
        elif message.get("close") is not None:
            await self.base_send(_close_message(message["close"], message.get("reason")))

    # -- protocol handlers ------------------------------------------------------------------

    async def websocket_connect(self, message: Message) -> None:
        """Join ``groups``, then call ``connect()``; ``DenyConnection`` refuses the handshake."""
        await self._join_declared_groups(self.groups)
        try:
            await self._call(self.connect)
        except DenyConnection:
            if not self._closed:
                await self.base_send({"type": "websocket.close"})

    async def websocket_receive(self, message: Message) -> None:
        """Pass a frame to ``receive(text_data=...)`` or ``receive(bytes_data=...)``."""
        # By keyword, as Channels calls it: its tutorial's receive(self, text_data) has no
        # bytes_data parameter.
        text = message.get("text")
        if text is not None:
            await self._call(functools.partial(self.receive, text_data=text))
        else:
            await self._call(functools.partial(self.receive, bytes_data=message.get("bytes")))

    async def websocket_suspend(self, message: Message) -> None:
        """The decoupled mode moves the connection to another worker: give it the state.

        Answers ``websocket.suspended`` with :meth:`suspend`'s state and the groups joined,
        then stops; the groups are left, ``disconnect()`` is not called (the client stays).
        """
        state = await self._call(self.suspend)
        groups = list(self.__dict__.get("_joined", [])) if state is not None else []
        await self.base_send({"type": "websocket.suspended", "state": state, "groups": groups})
        raise StopConsumer

    async def websocket_resume(self, message: Message) -> None:
        """The connection resumes here after a hand-over: rejoin its groups, then
        :meth:`resume` with the last instance's state (``connect()`` does not run)."""
        self._accepted = True  # the client was accepted by the first instance
        for group in message.get("groups") or []:
            await self.join_group(str(group))
        await self._call(self.resume, dict(message.get("state") or {}))

    async def websocket_disconnect(self, message: Message) -> None:
        """Leave the groups, run ``disconnect(code)`` within the deadline, and stop."""
        await self._leave_groups()
        await self._disconnect_once(int(message.get("code", 1005)))
        raise StopConsumer

    # -- hooks the subclasses call or override ----------------------------------------------

    def connect(self) -> Any:
        """Called on the handshake; accept it here (the default accepts)."""
        raise NotImplementedError

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> Any:
        """Called for each frame from the client."""
        raise NotImplementedError

    def disconnect(self, code: int) -> Any:
        """Called once the connection is gone (groups are left already)."""
        raise NotImplementedError

    def suspend(self) -> Any:
        """The state the next worker's instance needs (a dict of msgpack types), or ``None``
        to have it run ``connect()`` again. The default: :attr:`handover_attributes` and
        their values, or ``None`` when there are none."""
        raise NotImplementedError

    def resume(self, state: dict[str, Any]) -> Any:
        """Take over the state :meth:`suspend` gave; the default sets the attributes."""
        raise NotImplementedError

    def _handover_state(self) -> dict[str, Any] | None:
        if not self.handover_attributes:
            return None
        names = self.handover_attributes
        return {name: getattr(self, name) for name in names if hasattr(self, name)}

    def _take_handover_state(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    # -- shutdown ---------------------------------------------------------------------------

    async def _disconnect_once(self, code: int) -> None:
        if self._disconnected:
            return
        self._disconnected = True
        await self.run_with_deadline("disconnect", self.disconnect, code)

    async def _layer_unavailable(self, exc: LayerUnavailable, message: Message) -> bool:
        if not self._accepted and not self._closed:
            # During the handshake (joining a group in connect(), say) there is no open
            # connection to keep: it is refused, as for any failure, and the client retries.
            await self._fail(exc, message)
            return False
        return await super()._layer_unavailable(exc, message)

    async def on_failure(self, exc: BaseException, message: Message) -> None:
        """Close with 1011 (1007 for an undecodable frame), leave groups, run disconnect."""
        code = 1007 if isinstance(exc, InvalidFrame) else 1011
        if self.client_gone:
            code = 1006  # abnormal closure: the client vanished without a close frame
        if not self._closed and not self.client_gone:
            if self._accepted:
                await self.base_send(
                    _close_message(code, "invalid frame" if code == 1007 else "internal error")
                )
            else:
                # Before accept, a close is a refused handshake (HTTP 403).
                await self.base_send({"type": "websocket.close"})
        await self._leave_groups()
        await self._disconnect_once(code)


class AsyncWebsocketConsumer(_WebsocketProtocol, AsyncConsumer):
    """A WebSocket consumer with ``async def`` hooks.

    ::

        class Echo(AsyncWebsocketConsumer):
            groups = ["broadcast"]

            async def receive(self, text_data=None, bytes_data=None):
                await self.send(text_data=text_data)
    """

    async def connect(self) -> None:
        """Called on the handshake; the default accepts it."""
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called for each frame from the client; override it."""

    async def disconnect(self, code: int) -> None:
        """Called once the client or server closed the connection; override it."""

    async def suspend(self) -> dict[str, Any] | None:
        """The state for the next worker (decoupled mode), or ``None`` to have it run
        ``connect()`` again; the default: :attr:`handover_attributes` and their values."""
        return self._handover_state()

    async def resume(self, state: dict[str, Any]) -> None:
        """Take over :meth:`suspend`'s state instead of ``connect()``; the default sets the
        attributes."""
        self._take_handover_state(state)

    async def accept(self, subprotocol: str | None = None, headers: Headers | None = None) -> None:
        """Accept the handshake, optionally choosing a subprotocol and adding headers."""
        await self.base_send(_accept_message(subprotocol, headers))

    async def send(  # type: ignore[override]
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send a text or a binary frame; ``close=True`` (or a code) closes after it."""
        await self.base_send(_send_message(text_data, bytes_data))
        if close is not False:
            await self.close(None if close is True else close)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the connection (before ``accept``: refuse the handshake with HTTP 403)."""
        await self.base_send(_close_message(code, reason))

    async def subscribe_direct(self, group: str, since: Position | str | None = None) -> None:
        """Have the server write ``group``'s direct broadcasts to this connection itself.

        On kanal's server the process holds one membership for all its subscribers and
        writes each broadcast (sent with :meth:`group_send_direct`) framed once, without
        waking this consumer. Elsewhere the consumer joins the group and sends each one on.
        Left when the connection ends.

        ``since`` (a group with history, after ``accept()``: docs/history.md) first writes
        the broadcasts published after that position, then the live ones, none twice;
        raises ``HistoryGap``/``EpochChanged`` when they cannot all be recovered (the
        subscription stands: tell the client to reload).
        """
        await self._subscribe_direct(group, since)

    async def unsubscribe_direct(self, group: str) -> None:
        """Stop the direct broadcasts of ``group`` to this connection."""
        await self._unsubscribe_direct(group)

    async def group_send_direct(
        self,
        group: str,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        position_field: str | None = None,
    ) -> None:
        """Broadcast a text or binary frame to ``group``'s direct subscribers, everywhere.

        ``position_field`` puts the broadcast's position into a JSON object text (a group
        with history: see :func:`kanal.layers.direct_message`).
        """
        await self._group_send_direct(group, text_data, bytes_data, position_field)


class WebsocketConsumer(_WebsocketProtocol, SyncConsumer):
    """A WebSocket consumer with plain ``def`` hooks, run in a thread pool.

    ``self.send()``, ``self.accept()`` and ``self.close()`` block until the server took the
    event; use ``async_to_sync(self.channel_layer.group_send)`` for the layer.
    """

    def connect(self) -> None:
        """Called on the handshake; the default accepts it."""
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called for each frame from the client; override it."""

    def disconnect(self, code: int) -> None:
        """Called once the client or server closed the connection; override it."""

    def suspend(self) -> dict[str, Any] | None:
        """The state for the next worker (decoupled mode), or ``None`` to have it run
        ``connect()`` again; the default: :attr:`handover_attributes` and their values."""
        return self._handover_state()

    def resume(self, state: dict[str, Any]) -> None:
        """Take over :meth:`suspend`'s state instead of ``connect()``; the default sets the
        attributes."""
        self._take_handover_state(state)

    def accept(self, subprotocol: str | None = None, headers: Headers | None = None) -> None:
        """Accept the handshake, optionally choosing a subprotocol and adding headers."""
        async_to_sync(self.base_send)(_accept_message(subprotocol, headers))

    def send(  # type: ignore[override]
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send a text or a binary frame; ``close=True`` (or a code) closes after it."""
        async_to_sync(self.base_send)(_send_message(text_data, bytes_data))
        if close is not False:
            self.close(None if close is True else close)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the connection (before ``accept``: refuse the handshake with HTTP 403)."""
        async_to_sync(self.base_send)(_close_message(code, reason))

    def subscribe_direct(self, group: str, since: Position | str | None = None) -> None:
        """Have the server write ``group``'s direct broadcasts to this connection itself
        (see :meth:`AsyncWebsocketConsumer.subscribe_direct`)."""
        async_to_sync(self._subscribe_direct)(group, since)

    def unsubscribe_direct(self, group: str) -> None:
        """Stop the direct broadcasts of ``group`` to this connection."""
        async_to_sync(self._unsubscribe_direct)(group)

    def group_send_direct(
        self,
        group: str,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        position_field: str | None = None,
    ) -> None:
        """Broadcast a text or binary frame to ``group``'s direct subscribers, everywhere."""
        async_to_sync(self._group_send_direct)(group, text_data, bytes_data, position_field)


def _decode(consumer: object, text_data: str | None) -> Any:
    name = consumer.__name__ if isinstance(consumer, type) else type(consumer).__name__
    if text_data is None:
        raise InvalidFrame(f"{name} expects JSON in text frames, got a binary frame")
    try:
        return json.loads(text_data)
    except ValueError as exc:
        raise InvalidFrame(f"{name} got a text frame that is not JSON: {exc}") from None


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    """An async WebSocket consumer that speaks JSON: ``receive_json`` and ``send_json``.

    A frame that is not JSON closes the connection with code 1007 (invalid payload).
    """

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Decode the frame and pass it to :meth:`receive_json`."""
        await self.receive_json(
            await self.decode_json(text_data) if text_data is not None else _decode(self, None)
        )

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded message from the client; override it."""

    async def send_json(self, content: Any, close: bool | int = False) -> None:
        """Encode ``content`` as JSON and send it as a text frame."""
        await super().send(text_data=await self.encode_json(content), close=close)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        """Parse a text frame (override for another JSON library)."""
        return _decode(cls, text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        """Serialise a message (override for another JSON library)."""
        return json.dumps(content)


class JsonWebsocketConsumer(WebsocketConsumer):
    """A sync WebSocket consumer that speaks JSON: ``receive_json`` and ``send_json``."""

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Decode the frame and pass it to :meth:`receive_json`."""
        self.receive_json(
            self.decode_json(text_data) if text_data is not None else _decode(self, None)
        )

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded message from the client; override it."""

    def send_json(self, content: Any, close: bool | int = False) -> None:
        """Encode ``content`` as JSON and send it as a text frame."""
        super().send(text_data=self.encode_json(content), close=close)

    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        """Parse a text frame (override for another JSON library)."""
        return _decode(cls, text_data)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        """Serialise a message (override for another JSON library)."""
        return json.dumps(content)
