"""WebSocket (RFC 6455) without I/O, on the ``websockets`` sans-I/O protocol.

``websockets.server.ServerProtocol`` parses and serialises frames (with C-accelerated
masking), answers pings, runs the closing handshake and enforces the message size limit
(close 1009). This module adds what ASGI needs on top: the handshake from an already parsed
upgrade request, whole messages out of fragments, UTF-8 validation of text as it arrives
(close 1007, RFC 6455 §8.1), and events the server hands to the application.

The library is used through its documented sans-I/O API (``receive_data``,
``events_received``, ``data_to_send``, ``accept``, ``send_response``, ``send_*``, ``fail``,
``state``, ``subprotocol``), plus ``close_sent``, an attribute without an underscore that it
sets and this module only reads, and one patch of its internals, in
:class:`_ServerProtocol`. The session frames the messages of a connection without
compression itself (:func:`~kanal.protocols.message_frame`, see
``WebSocketConnection.plain_frames``); the library frames everything else. Needs
websockets 16.0 or later (the patched attribute was named ``cur_size`` before); checked
against 16.0, 16.1.1, 17.0 and 17.4. None of its exceptions leaves this module: the state
checks below come first.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Sequence
from typing import Final

from websockets.extensions.permessage_deflate import enable_server_permessage_deflate
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import SEND_EOF, State
from websockets.server import ServerProtocol

from kanal.exceptions import ClientDisconnected, ProtocolStateError
from kanal.protocols._headers import check_header
from kanal.protocols._http import error_response

__all__ = [
    "WebSocketClosed",
    "WebSocketConnection",
    "WebSocketEvent",
    "WebSocketMessage",
    "WebSocketPong",
    "handshake_problem",
]

# websockets logs every opened and closed connection at INFO; that is noise next to the
# access log, so its per-connection logger is quiet unless someone lowers this level.
_protocol_logger = logging.getLogger("kanal.protocols.websocket")
_protocol_logger.setLevel(logging.WARNING)

_TEXT: Final = Opcode.TEXT
_BINARY: Final = Opcode.BINARY
_CONT: Final = Opcode.CONT
_CLOSE: Final = Opcode.CLOSE
_PONG: Final = Opcode.PONG
_CAN_PING: Final = (State.OPEN, State.CLOSING)  # RFC 6455 §5.5: control frames while closing
_BAD_HANDSHAKE: Final = error_response(400, "Bad WebSocket handshake")


# The request headers that ServerProtocol.accept() reads (Origin: it refuses several).
_HANDSHAKE_HEADERS: Final = frozenset(
    (
        b"connection",
        b"upgrade",
        b"origin",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
    )
)


class _ServerProtocol(ServerProtocol):
    """``ServerProtocol`` that accepts a Close between the fragments of a message."""

    def recv_frame(self, frame: Frame) -> None:
        # RFC 6455 §5.4 allows control frames between fragments and §5.5.1 says a Close is
        # answered with a Close; the partial message is dropped. websockets fails the
        # connection with 1002 instead (Autobahn case 7.1.5). ``recv_frame`` (the hook its
        # parser calls per frame) and ``current_size`` (the size of the message being
        # reassembled, None between messages) are the library's internals, the one patch
        # this module needs: there is no public way to drop a partial message. Checked
        # against websockets 16.0 to 17.4, where both have this meaning (before 16.0 the
        # attribute was ``cur_size``, and this line would silently do nothing).
        if frame.opcode is _CLOSE:
            self.current_size = None
        super().recv_frame(frame)


class WebSocketMessage:
    """A complete message: ``data`` is ``str`` for text, ``bytes`` for binary."""

    __slots__ = ("data",)

    def __init__(self, data: str | bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"WebSocketMessage({self.data[:40]!r})"


class WebSocketClosed:
    """The connection is closed or closing: the peer's close code, or ours on failure.

    ``code`` is 1005 when the peer sent a close frame without a code and 1006 when the
    connection was lost without one (RFC 6455 §7.1.5). ``local`` is True when this side
    failed the connection (a protocol error 1002, invalid UTF-8 1007, a message too big
    1009) and ``code`` is the one it sent.
    """

    __slots__ = ("code", "local", "reason")

    def __init__(self, code: int, reason: str, *, local: bool = False) -> None:
        self.code = code
        self.reason = reason
        self.local = local

    def __repr__(self) -> str:
        return f"WebSocketClosed({self.code}, {self.reason!r})"


class WebSocketPong:
    """A pong arrived (answers a keepalive ping)."""

    __slots__ = ()


WebSocketEvent = WebSocketMessage | WebSocketClosed | WebSocketPong
#: What :meth:`WebSocketConnection.receive_messages` returns: a message as its data.
Received = str | bytes | WebSocketClosed | WebSocketPong
_PONG_EVENT: Final = WebSocketPong()


def handshake_problem(method: str, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """Why an upgrade request is not a valid WebSocket opening handshake, or ``None``.

    Checked before the application sees the connection, so that it only ever gets valid
    handshakes (RFC 6455 §4.2.1).
    """
    if method != "GET":
        return f"WebSocket handshake needs GET, not {method}"
    key = version = None
    for name, value in headers:
        if name == b"sec-websocket-key":
            key = value
        elif name == b"sec-websocket-version":
            version = value
    if not key:
        return "missing Sec-WebSocket-Key header"
    if version != b"13":
        return f"unsupported Sec-WebSocket-Version {version!r}; this server speaks 13"
    return None


class WebSocketConnection:
    """The server side of one WebSocket connection, from handshake to close.

    ``max_size`` bounds an incoming message (fragments included) and a single frame; a
    larger one closes the connection with 1009. ``compression`` accepts permessage-deflate
    when the client offers it (RFC 7692), with the websockets library's memory-conscious
    settings (4 KiB windows, ``memLevel`` 5); it is off by default because each compressed
    connection still holds two zlib streams (measured: about 39 KB per idle connection,
    against 95 KB with zlib's defaults and 7 KB without compression).

    Every method that produces bytes drains one outgoing buffer, so frames leave in the
    order they were produced whichever method returns them.
    """

    __slots__ = (
        "_close_reported",
        "_decoder",
        "_fragments",
        "_protocol",
        "_text",
        "compression",
        "max_size",
        "plain_frames",
    )

    def __init__(self, *, max_size: int | None = 1024 * 1024, compression: bool = False) -> None:
        self.max_size = max_size
        self.compression = compression
        self._protocol: ServerProtocol | None = None
        self._fragments: list[bytes] | list[str] | None = None
        self._text = False
        self._decoder: codecs.IncrementalDecoder | None = None
        # A WebSocketClosed event was returned: the connection reports its end once.
        self._close_reported = False
        #: True once accepted without an extension (no permessage-deflate): a message is
        #: then one plain frame, which :func:`~kanal.protocols.message_frame` builds with
        #: the same bytes as the library and a fraction of its calls. The session frames
        #: its messages so; with compression they go through the library.
        self.plain_frames = False

    # The opening handshake.

    def accept(
        self,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
        subprotocol: str | None = None,
        extra_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> tuple[bytes, int]:
        """Answer the upgrade request; return the response bytes and its status.

        ``path`` is the request's path (the handshake does not depend on it); ``headers``
        the request's headers. ``subprotocol`` is the one the application chose (sent in
        ``Sec-WebSocket-Protocol``). A status other than 101 means the handshake failed and
        the connection must be closed after writing the response.
        """
        select = None
        if subprotocol is not None:
            chosen = subprotocol

            def select(_protocol: ServerProtocol, _offered: Sequence[str]) -> str | None:
                return chosen

        # Without a choice, the library's own selection applies: with no subprotocols of
        # its own it picks none, as the function above would, and no function (and its
        # bound method, about 260 bytes) stays with an idle connection.
        protocol = _ServerProtocol(
            extensions=enable_server_permessage_deflate(None) if self.compression else None,
            select_subprotocol=select,  # type: ignore[arg-type]
            max_size=self.max_size,
            logger=_protocol_logger,
        )
        self._protocol = protocol
        # The HTTP layer parsed the request already; the library is handed the lines of the
        # handshake again, through its own parser, because that is the only public way past
        # its request parser to its frame parser (the path is not used).
        protocol.receive_data(
            b"".join(
                [b"GET / HTTP/1.1\r\n"]
                + [b"%s: %s\r\n" % pair for pair in headers if pair[0] in _HANDSHAKE_HEADERS]
                + [b"\r\n"]
            )
        )
        parsed = protocol.events_received()
        if len(parsed) != 1 or not isinstance(parsed[0], Request):
            # The library refused the request (a header line it cannot parse) and answered
            # it itself or not at all.
            out, _ = self._pending()
            return out or _BAD_HANDSHAKE, 400
        request = parsed[0]
        response = protocol.accept(request)
        # The library's parser keeps the request it parsed for as long as the connection
        # lives (a local of its parsing generator); its headers are not needed after the
        # handshake, and emptying them saves about 1 KB per idle WebSocket.
        request.headers.clear()
        if response.status_code == 101:
            for name, value in extra_headers:
                check_header(name, value)  # raises InvalidHeader: CR/LF would inject lines
                lname = name.lower()
                # The server owns the handshake headers; an app may not override them.
                if lname.startswith(b"sec-websocket-") or lname in (b"upgrade", b"connection"):
                    continue
                response.headers[name.decode("latin-1")] = value.decode("latin-1")
            # A frame the library builds is logged at DEBUG: with that level on, it keeps
            # building them.
            self.plain_frames = "Sec-WebSocket-Extensions" not in response.headers and not (
                _protocol_logger.isEnabledFor(logging.DEBUG)
            )
        protocol.send_response(response)
        return b"".join(protocol.data_to_send()), response.status_code

    @property
    def subprotocol(self) -> str | None:
        """The negotiated subprotocol."""
        return self._protocol.subprotocol if self._protocol else None

    @property
    def open(self) -> bool:
        """True while messages can be sent."""
        return self._protocol is not None and self._protocol.state is State.OPEN

    @property
    def closed(self) -> bool:
        """True once the connection is fully closed (or the handshake never happened)."""
        return self._protocol is None or self._protocol.state is State.CLOSED

    @property
    def close_sent(self) -> Close | None:
        """The close frame we sent, if any."""
        return self._protocol.close_sent if self._protocol else None

    # Receiving.

    def receive_data(self, data: bytes) -> tuple[list[WebSocketEvent], bytes, bool]:
        """Feed bytes; return ``(events, bytes to write, close the transport after)``."""
        received, out, eof = self.receive_messages(data)
        events: list[WebSocketEvent] = [
            event if isinstance(event, WebSocketClosed | WebSocketPong) else WebSocketMessage(event)
            for event in received
        ]
        return events, out, eof

    def receive_messages(self, data: bytes) -> tuple[list[Received], bytes, bool]:
        """:meth:`receive_data` with each complete message as its data, ``str`` or ``bytes``.

        One object less per message than a :class:`WebSocketMessage`, for a caller that
        translates further (:class:`~kanal.protocols.WebSocketSession`).
        """
        protocol = self._protocol
        if protocol is None:
            raise ProtocolStateError("WebSocket data before the handshake was accepted")
        protocol.receive_data(data)
        frames: list[Frame] = protocol.events_received()  # type: ignore[assignment]
        events: list[Received] | None = None
        if len(frames) == 1:
            # The commonest read of all: one complete message in one frame, translated
            # here. A TEXT or BINARY frame the library reports never continues a fragmented
            # message (it checks the order); invalid UTF-8 takes the long way, which fails
            # the connection.
            frame = frames[0]
            if frame.fin:
                if frame.opcode is _TEXT:
                    try:
                        events = [bytes(frame.data).decode()]
                    except UnicodeDecodeError:
                        events = None  # (not contextlib.suppress: three calls per message)
                elif frame.opcode is _BINARY:
                    events = [bytes(frame.data)]
        if events is None:
            events = self._translate(frames)
        writes = protocol.data_to_send()
        if not writes:  # the usual case: nothing to answer (no ping, no close)
            return events, b"", False
        eof = writes[-1] == SEND_EOF
        if eof and not self._close_reported:
            # The library failed the connection (1002, 1009...) without a close from the
            # peer: report the close code it sent. A server sends EOF right after its close
            # frame when it fails a connection (RFC 6455 §7.1.7), and otherwise only once
            # the peer's close arrived, which _translate reported.
            sent = protocol.close_sent  # set by the library's fail(), read only here
            self._close_reported = True
            if sent is not None:
                events.append(WebSocketClosed(sent.code, sent.reason, local=True))
            else:
                events.append(WebSocketClosed(1006, "connection failed", local=True))
        return events, b"".join(writes), eof

    def receive_eof(self) -> tuple[list[WebSocketEvent], bytes, bool]:
        """The peer closed its side of the TCP connection."""
        protocol = self._protocol
        if protocol is None:
            return [WebSocketClosed(1006, "")], b"", True
        protocol.receive_eof()
        protocol.events_received()
        out, eof = self._pending()
        if self._close_reported:
            return [], out, eof
        self._close_reported = True
        return [WebSocketClosed(1006, "connection lost")], out, eof

    def _translate(self, frames: list[Frame]) -> list[Received]:
        events: list[Received] = []
        for frame in frames:
            opcode = frame.opcode
            if opcode is _TEXT:
                if frame.fin:
                    try:
                        events.append(bytes(frame.data).decode())
                    except UnicodeDecodeError as exc:
                        return self._fail_utf8(events, exc)
                else:
                    first = codecs.getincrementaldecoder("utf-8")()
                    self._decoder = first
                    self._text = True
                    try:
                        self._fragments = [first.decode(frame.data)]
                    except UnicodeDecodeError as exc:
                        return self._fail_utf8(events, exc)
            elif opcode is _BINARY:
                if frame.fin:
                    events.append(bytes(frame.data))
                else:
                    self._text = False
                    self._fragments = [bytes(frame.data)]
            elif opcode is _CONT:
                fragments = self._fragments
                assert fragments is not None  # the protocol checks the frame order
                if self._text:
                    decoder = self._decoder
                    assert decoder is not None
                    try:
                        fragments.append(decoder.decode(frame.data, frame.fin))  # type: ignore[arg-type]
                    except UnicodeDecodeError as exc:
                        return self._fail_utf8(events, exc)
                    if frame.fin:
                        events.append("".join(fragments))  # type: ignore[arg-type]
                else:
                    fragments.append(frame.data)  # type: ignore[arg-type]
                    if frame.fin:
                        events.append(b"".join(fragments))  # type: ignore[arg-type]
                if frame.fin:
                    self._fragments = None
                    self._decoder = None
            elif opcode is _CLOSE:
                self._fragments = None  # a partial message dies with the connection
                self._decoder = None
                # The library parsed this payload already (a bad one fails the connection
                # before the frame is reported); an empty one reads as 1005 (RFC 6455 §7.1.5).
                close = Close.parse(frame.data)
                self._close_reported = True
                events.append(WebSocketClosed(close.code, close.reason))
            elif opcode is _PONG:
                events.append(_PONG_EVENT)
        return events

    def _fail_utf8(self, events: list[Received], exc: UnicodeDecodeError) -> list[Received]:
        protocol = self._protocol
        assert protocol is not None
        self._fragments = None
        self._decoder = None
        reason = f"invalid UTF-8: {exc.reason}"
        protocol.fail(CloseCode.INVALID_DATA, reason)
        self._close_reported = True
        events.append(WebSocketClosed(int(CloseCode.INVALID_DATA), reason, local=True))
        return events

    # Sending.

    def _pending(self) -> tuple[bytes, bool]:
        protocol = self._protocol
        assert protocol is not None
        writes = protocol.data_to_send()
        if not writes:
            return b"", False
        eof = writes[-1] == SEND_EOF
        return b"".join(writes), eof

    def _frame(self, data: str | bytes) -> bool:
        """Queue a message frame; False when the connection is not open (nothing queued)."""
        protocol = self._protocol
        if protocol is None or protocol.state is not State.OPEN:
            return False
        if type(data) is str:
            protocol.send_text(data.encode())
        else:
            protocol.send_binary(data)  # type: ignore[arg-type]
        return True

    def send_message(self, data: str | bytes) -> bytes:
        """Frame a text (``str``) or binary (``bytes``) message.

        Raises :class:`~kanal.exceptions.ProtocolStateError` before :meth:`accept` and
        :class:`~kanal.exceptions.ClientDisconnected` once the closing handshake started.
        """
        if not self._frame(data):
            if self._protocol is None:
                raise ProtocolStateError("WebSocket message before the handshake was accepted")
            raise ClientDisconnected("the WebSocket is closing or closed")
        return b"".join(self._protocol.data_to_send())  # type: ignore[union-attr]

    def queue_message(self, data: str | bytes) -> bool:
        """Frame a message into the outgoing buffer; :meth:`output` takes it.

        Returns False (and queues nothing) when the connection is not open. Frames queued
        this way and the bytes the other methods return leave in the order they were
        produced: every method drains the same buffer. Queuing several messages and writing
        them with one :meth:`output` saves a system call per message.
        """
        return self._frame(data)

    def output(self) -> tuple[bytes, bool]:
        """The bytes queued so far and whether to close the transport after writing them."""
        if self._protocol is None:
            return b"", False
        return self._pending()

    def send_ping(self, payload: bytes = b"") -> bytes:
        """Frame a ping (keepalive); nothing once the connection is closed."""
        protocol = self._protocol
        if protocol is None or protocol.state not in _CAN_PING:
            return b""
        protocol.send_ping(payload)
        return b"".join(protocol.data_to_send())

    def send_close(self, code: int = 1000, reason: str = "") -> tuple[bytes, bool]:
        """Start the closing handshake; return bytes and whether to close the transport."""
        protocol = self._protocol
        if protocol is None or protocol.state is not State.OPEN:
            return b"", False
        protocol.send_close(code, reason)
        return self._pending()

    def fail(self, code: int, reason: str = "") -> tuple[bytes, bool]:
        """Close at once (timeouts, server errors) with ``code``."""
        protocol = self._protocol
        if protocol is None:
            return b"", True
        protocol.fail(code, reason)
        self._close_reported = True
        return self._pending()
