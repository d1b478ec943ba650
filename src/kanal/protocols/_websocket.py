"""WebSocket (RFC 6455) without I/O, on the ``websockets`` sans-I/O protocol.

``websockets.server.ServerProtocol`` parses and serialises frames (with C-accelerated
masking), answers pings, runs the closing handshake and enforces the message size limit
(close 1009). This module adds what ASGI needs on top: the handshake from an already parsed
upgrade request, whole messages out of fragments, UTF-8 validation of text as it arrives
(close 1007, RFC 6455 §8.1), and events the server hands to the application.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Sequence
from typing import Final

from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.extensions.permessage_deflate import enable_server_permessage_deflate
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import SEND_EOF, Protocol, State
from websockets.server import ServerProtocol

from kanal.protocols._headers import check_header

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


class _ServerProtocol(ServerProtocol):
    """``ServerProtocol`` that accepts a Close between the fragments of a message."""

    def recv_frame(self, frame: Frame) -> None:
        # RFC 6455 §5.4 allows control frames between fragments and §5.5.1 says a Close is
        # answered with a Close; the partial message is dropped. websockets fails the
        # connection with 1002 instead (Autobahn case 7.1.5).
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
    connection was lost without one (RFC 6455 §7.1.5).
    """

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"WebSocketClosed({self.code}, {self.reason!r})"


class WebSocketPong:
    """A pong arrived (answers a keepalive ping)."""

    __slots__ = ()


WebSocketEvent = WebSocketMessage | WebSocketClosed | WebSocketPong
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
    """

    __slots__ = ("_decoder", "_fragments", "_protocol", "_text", "compression", "max_size")

    def __init__(self, *, max_size: int | None = 1024 * 1024, compression: bool = False) -> None:
        self.max_size = max_size
        self.compression = compression
        self._protocol: ServerProtocol | None = None
        self._fragments: list[bytes] | list[str] | None = None
        self._text = False
        self._decoder: codecs.IncrementalDecoder | None = None

    # The opening handshake.

    def accept(
        self,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
        subprotocol: str | None = None,
        extra_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> tuple[bytes, int]:
        """Answer the upgrade request; return the response bytes and its status.

        ``subprotocol`` is the one the application chose (sent in
        ``Sec-WebSocket-Protocol``). A status other than 101 means the handshake failed and
        the connection must be closed after writing the response.
        """
        chosen = subprotocol

        def select(_protocol: ServerProtocol, _offered: Sequence[str]) -> str | None:
            return chosen

        protocol = _ServerProtocol(
            extensions=enable_server_permessage_deflate(None) if self.compression else None,
            select_subprotocol=select,  # type: ignore[arg-type]
            max_size=self.max_size,
            logger=_protocol_logger,
        )
        self._protocol = protocol
        request = Request(
            path,
            Headers([(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]),
        )
        response = protocol.accept(request)
        if response.status_code == 101:
            for name, value in extra_headers:
                check_header(name, value)  # raises InvalidHeader: CR/LF would inject lines
                lname = name.lower()
                # The server owns the handshake headers; an app may not override them.
                if lname.startswith(b"sec-websocket-") or lname in (b"upgrade", b"connection"):
                    continue
                response.headers[name.decode("latin-1")] = value.decode("latin-1")
        protocol.send_response(response)
        if response.status_code == 101:
            # The request was parsed by the HTTP layer, so skip ServerProtocol's own request
            # parser and start reading frames.
            protocol.parser = Protocol.parse(protocol)
            next(protocol.parser)
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
        protocol = self._protocol
        if protocol is None:
            raise InvalidState("receive_data() before accept()")
        protocol.receive_data(data)
        events = self._translate(protocol.events_received())  # type: ignore[arg-type]
        if not protocol.writes:  # the usual case: nothing to answer (no ping, no close)
            return events, b"", False
        out, eof = self._pending()
        return events, out, eof

    def receive_eof(self) -> tuple[list[WebSocketEvent], bytes, bool]:
        """The peer closed its side of the TCP connection."""
        protocol = self._protocol
        if protocol is None:
            return [WebSocketClosed(1006, "")], b"", True
        had_close = protocol.close_rcvd is not None
        protocol.receive_eof()
        protocol.events_received()
        out, eof = self._pending()
        if had_close:
            return [], out, eof
        return [WebSocketClosed(1006, "connection lost")], out, eof

    def _translate(self, frames: list[Frame]) -> list[WebSocketEvent]:
        events: list[WebSocketEvent] = []
        protocol = self._protocol
        assert protocol is not None
        for frame in frames:
            opcode = frame.opcode
            if opcode is _TEXT:
                if frame.fin:
                    try:
                        events.append(WebSocketMessage(bytes(frame.data).decode()))
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
                    events.append(WebSocketMessage(bytes(frame.data)))
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
                        events.append(WebSocketMessage("".join(fragments)))  # type: ignore[arg-type]
                else:
                    fragments.append(frame.data)  # type: ignore[arg-type]
                    if frame.fin:
                        events.append(WebSocketMessage(b"".join(fragments)))  # type: ignore[arg-type]
                if frame.fin:
                    self._fragments = None
                    self._decoder = None
            elif opcode is _CLOSE:
                self._fragments = None  # a partial message dies with the connection
                self._decoder = None
                rcvd = protocol.close_rcvd
                if rcvd is not None:
                    events.append(WebSocketClosed(rcvd.code, rcvd.reason))
            elif opcode is _PONG:
                events.append(_PONG_EVENT)
        if protocol.parser_exc is not None and protocol.close_sent is not None:
            # The protocol failed the connection (1002, 1009...): report our close code.
            sent = protocol.close_sent
            events.append(WebSocketClosed(sent.code, sent.reason))
        return events

    def _fail_utf8(
        self, events: list[WebSocketEvent], exc: UnicodeDecodeError
    ) -> list[WebSocketEvent]:
        protocol = self._protocol
        assert protocol is not None
        self._fragments = None
        self._decoder = None
        reason = f"invalid UTF-8: {exc.reason}"
        protocol.fail(CloseCode.INVALID_DATA, reason)
        events.append(WebSocketClosed(int(CloseCode.INVALID_DATA), reason))
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

    def send_message(self, data: str | bytes) -> bytes:
        """Frame a text (``str``) or binary (``bytes``) message."""
        protocol = self._protocol
        if protocol is None:
            raise InvalidState("send before accept()")
        if type(data) is str:
            protocol.send_text(data.encode())
        else:
            protocol.send_binary(data)  # type: ignore[arg-type]
        return b"".join(protocol.data_to_send())

    def queue_message(self, data: str | bytes) -> bool:
        """Frame a message into the outgoing buffer; :meth:`output` takes it.

        Returns False (and queues nothing) when the connection is not open. Frames queued
        this way and the bytes the other methods return leave in the order they were
        produced: every method drains the same buffer. Queuing several messages and writing
        them with one :meth:`output` saves a system call per message.
        """
        protocol = self._protocol
        if protocol is None:
            return False
        try:
            if type(data) is str:
                protocol.send_text(data.encode())
            else:
                protocol.send_binary(data)  # type: ignore[arg-type]
        except InvalidState:
            return False
        return True

    def output(self) -> tuple[bytes, bool]:
        """The bytes queued so far and whether to close the transport after writing them."""
        if self._protocol is None:
            return b"", False
        return self._pending()

    def send_ping(self, payload: bytes = b"") -> bytes:
        """Frame a ping (keepalive)."""
        protocol = self._protocol
        if protocol is None:
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
        return self._pending()
