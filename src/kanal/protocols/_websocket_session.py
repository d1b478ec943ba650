"""One WebSocket as its ASGI application sees it: bytes and messages in, events and bytes out.

:class:`WebSocketSession` is the sans-I/O half of the server's WebSocket connection. The
client's bytes go in through :meth:`~WebSocketSession.receive_data`; the events for the
application's ``receive()`` (``websocket.connect``, ``websocket.receive``,
``websocket.disconnect``) come out of :meth:`~WebSocketSession.next_event`; the
application's messages go in through :meth:`~WebSocketSession.send`, which applies the table
of :mod:`kanal.protocols._websocket_state`; the bytes to write come out of
:meth:`~WebSocketSession.data_to_send`. It holds no socket, no task and no clock: the server
decides when to read, write and time out, using the sizes this object reports.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from kanal.exceptions import ASGIMessageError
from kanal.protocols._frames import message_frame
from kanal.protocols._http import RequestStart, ResponseWriter, error_response
from kanal.protocols._websocket import WebSocketClosed, WebSocketConnection, WebSocketPong
from kanal.protocols._websocket_state import TRANSITIONS, Refusal, WebSocketAction, WebSocketState
from kanal.typing import Message

__all__ = ["WebSocketSession"]

_OPEN: Final = WebSocketState.OPEN
_CLOSING: Final = WebSocketState.CLOSING
_CLOSED: Final = WebSocketState.CLOSED
_SEND: Final = WebSocketAction.SEND
_FORBIDDEN: Final = error_response(403, "Forbidden")
# RFC 6455 §7.4.1 and the IANA registry: the codes an endpoint may send (1004-1006 and 1015
# are reserved, never sent); 3000-4999 belong to libraries and applications (§7.4.2).
_SENDABLE_CODES: Final = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))
# A close frame's payload is at most 125 bytes (§5.5), two of which hold the code.
_MAX_REASON: Final = 123
_KEEPALIVE_PAYLOAD: Final = b"kanal"


class _NoEvents(deque[Message]):
    """The :attr:`WebSocketSession.events` of every session with none waiting.

    One shared empty deque instead of one per connection: an idle WebSocket, waiting in
    ``receive()``, holds no queue of its own (a deque is about 770 bytes, measured with
    tracemalloc). It refuses to grow, so that no event can land in every session at once.
    """

    __slots__ = ()

    def _refuse(self, *args: object) -> None:
        raise AssertionError("an event queued on the shared empty queue")

    append = appendleft = extend = extendleft = insert = _refuse

    def __iadd__(self, other: object) -> _NoEvents:
        self._refuse()
        return self


_IDLE: Final = _NoEvents()


def _valid_close_code(code: object) -> bool:
    return type(code) is int and (code in _SENDABLE_CODES or 3000 <= code <= 4999)


class WebSocketSession:
    """The ASGI side of one WebSocket connection, from the upgrade request to the close.

    ``request`` is the upgrade request the HTTP layer parsed (checked with
    :func:`~kanal.protocols.handshake_problem` first). ``max_size`` and ``compression`` are
    those of :class:`~kanal.protocols.WebSocketConnection`.

    Sizes the server bounds (see the "Limits" section of the server's documentation):
    :attr:`pending_bytes` (data the client sent before the handshake was answered, held
    until the application accepts), :attr:`queued_bytes` and ``len(events)`` (messages
    waiting for the application's ``receive()``).
    """

    __slots__ = (
        "_close_after",
        "_denial",
        "_out",
        "_pending",
        "awaiting_pong",
        "close_code",
        "events",
        "failure",
        "path",
        "pending_bytes",
        "queued_bytes",
        "request_headers",
        "state",
        "status",
        "subprotocols",
        "ws",
    )

    def __init__(
        self,
        request: RequestStart,
        *,
        max_size: int | None = 1024 * 1024,
        compression: bool = False,
    ) -> None:
        self.path = request.path
        self.request_headers = request.headers
        offered: list[str] = []
        for name, value in request.headers:
            if name == b"sec-websocket-protocol":
                offered += [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
        #: The subprotocols the client offered, in its order (``scope["subprotocols"]``).
        self.subprotocols = offered
        self.ws = WebSocketConnection(max_size=max_size, compression=compression)
        #: Where the connection is; see :mod:`kanal.protocols._websocket_state`.
        self.state = WebSocketState.CONNECTING
        #: How the handshake was answered (101, 403, a denial's status...), once it was.
        self.status: int | None = None
        #: The events the application has yet to receive, oldest first; read them with
        #: :meth:`next_event`. Emptied, it is replaced by one empty queue that every idle
        #: session shares (the first event to queue makes a new one).
        self.events: deque[Message] = deque([{"type": "websocket.connect"}])
        #: Payload bytes (characters for text) of the messages in :attr:`events`.
        self.queued_bytes = 0
        #: Bytes the client sent before the handshake was answered, not yet parsed.
        self.pending_bytes = 0
        #: A keepalive ping was sent and its pong has not arrived.
        self.awaiting_pong = False
        #: The close code with which this side failed the connection (1002 a protocol
        #: error, 1007 invalid UTF-8, 1009 a message over ``max_size``), if it did.
        self.failure: int | None = None
        #: The code an accepted connection ended with, as its application heard it (1006:
        #: the client vanished); None while open, or when it was never accepted.
        self.close_code: int | None = None
        self._pending: list[bytes] | None = None  # created for the rare early client
        # Everything to write, in order: the 101, a 403 or a denial response, the frames of
        # the app's messages and what the WebSocketConnection methods return; reused, not
        # replaced.
        self._out: list[bytes] = []
        self._close_after = False
        self._denial: ResponseWriter | None = None

    # From the client

    def receive_data(self, data: bytes) -> int:
        """Feed bytes from the client; the events they complete are queued in :attr:`events`.

        Returns how many of those are messages (``websocket.receive``).
        """
        state = self.state
        if state is _OPEN or state is _CLOSING:
            events, out, eof = self.ws.receive_messages(data)
            if out:
                self._out.append(out)
            if eof:  # the close handshake ended, or the connection failed: EOF after these
                self._close_after = True
            queue = self.events
            messages = 0
            for event in events:
                kind = type(event)
                if kind is str or kind is bytes:
                    if queue is _IDLE:
                        queue = self.events = deque()
                    self.queued_bytes += len(event)  # type: ignore[arg-type]
                    queue.append(
                        {"type": "websocket.receive", "text": event}
                        if kind is str
                        else {"type": "websocket.receive", "bytes": event}
                    )
                    messages += 1
                elif kind is WebSocketPong:
                    self.awaiting_pong = False
                else:
                    closed: WebSocketClosed = event  # type: ignore[assignment]
                    if closed.local:
                        self.failure = closed.code
                    self._closed(closed.code, closed.reason)
                    queue = self.events  # (nothing follows a close; kept right regardless)
            return messages
        if state is WebSocketState.CONNECTING:
            # RFC 6455 §4.1 has the client wait for the 101, but some send at once: held
            # (and bounded by the server through pending_bytes) until the app answers.
            if self._pending is None:
                self._pending = []
            self._pending.append(data)
            self.pending_bytes += len(data)
        # Otherwise the handshake was refused or the connection is over: the bytes are
        # dropped (RFC 6455 §1.4: nothing is processed after the close).
        return 0

    def receive_eof(self) -> None:
        """The client closed its side of the TCP connection."""
        if self.state is _OPEN or self.state is _CLOSING:
            events, _, _ = self.ws.receive_eof()
            for event in events:
                if type(event) is WebSocketClosed:
                    self._closed(event.code, event.reason)

    def connection_lost(self) -> None:
        """The transport is gone: the application hears it (1006) if it did not yet."""
        self._closed(1006, "")

    def _closed(self, code: int, reason: str) -> None:
        # Every state moves to CLOSED when the client leaves, and the app hears it once.
        state = self.state
        if state is _CLOSED:
            return
        if state is _OPEN or state is _CLOSING:
            self.close_code = code
        self.state = _CLOSED
        self._pending = None
        self.pending_bytes = 0
        events = self.events
        if events is _IDLE:
            events = self.events = deque()
        events.append({"type": "websocket.disconnect", "code": code, "reason": reason})

    # Towards the application

    def next_event(self) -> Message | None:
        """The next event for the application's ``receive()``, or None if it must wait.

        ``websocket.disconnect`` is the last event and is given again to every later call.
        """
        events = self.events
        if events:
            message = events.popleft()
            kind = message["type"]
            if kind == "websocket.receive":
                payload = message.get("text")
                self.queued_bytes -= len(payload if payload is not None else message["bytes"])
            elif kind == "websocket.disconnect":
                events.append(message)
                return message
            if not events:
                self.events = _IDLE
            return message
        return None

    # From the application

    def send(self, message: Message, server_headers: bytes = b"") -> WebSocketAction:
        """Apply one message from the application; return what was done.

        ``server_headers`` are header lines the server adds to an HTTP response it sends
        instead of the 101 (its ``Date``). Raises
        :class:`~kanal.exceptions.ASGIMessageError` for a message the state does not allow
        and :class:`~kanal.exceptions.ClientDisconnected` once the WebSocket is closed.
        """
        kind = message["type"]
        entry = TRANSITIONS[self.state].get(kind)
        if entry is None:
            raise ASGIMessageError(f"unexpected ASGI message type {kind!r} for a WebSocket")
        if type(entry) is Refusal:
            raise entry.exception(self.path)
        action, after = entry  # type: ignore[misc]
        if action is _SEND:
            text = message.get("text")
            data = text if text is not None else message.get("bytes")
            if data is None:
                raise ASGIMessageError("websocket.send needs 'text' or 'bytes'")
            # OPEN here is OPEN in the library too: every move of its state out of OPEN
            # (our close, its failure, the client's close or EOF) moves this one as well.
            ws = self.ws
            self._out.append(message_frame(data) if ws.plain_frames else ws.send_message(data))
        elif action is WebSocketAction.ACCEPT:
            self._accept(message)
            return action
        elif action is WebSocketAction.CLOSE:
            code = message.get("code")
            if code is None:
                code = 1000  # ASGI's default
            reason = message.get("reason") or ""
            if not _valid_close_code(code):
                raise ASGIMessageError(f"websocket.close with an invalid code {code!r}")
            if len(reason.encode()) > _MAX_REASON:
                raise ASGIMessageError(f"websocket.close reason longer than {_MAX_REASON} bytes")
            self._close_frame(code, reason)
        elif action is WebSocketAction.REJECT:
            self._answer_http(403, _FORBIDDEN)
        elif action is WebSocketAction.START_DENIAL:
            started = ResponseWriter(head_only=False, http11=True, keep_alive=False)
            # Raises for a bad status or header before the state moves: the handshake is
            # still open, so an app that lets the error escape gets its client a 500.
            started.start(message["status"], message.get("headers", ()), server_headers)
            self._denial = started
            self.status = message["status"]
        elif action is WebSocketAction.SUBSCRIBE or action is WebSocketAction.UNSUBSCRIBE:
            group = message.get("group")
            if type(group) is not str or not group:
                raise ASGIMessageError(f"{kind} needs a 'group' name (a non-empty str)")
            since = message.get("since")
            if since is not None:
                if action is WebSocketAction.UNSUBSCRIBE or type(since) is not str:
                    raise ASGIMessageError(
                        f"{kind}: 'since' is a position string, for a subscribe only"
                    )
                if self.state is not WebSocketState.OPEN:
                    # Frames reach a connection once it is open: a catch-up before would
                    # be lost.
                    raise ASGIMessageError(
                        f"{kind} with 'since' needs an accepted connection: accept first"
                    )
        elif action is WebSocketAction.DENIAL_BODY:
            writer = self._denial
            assert writer is not None  # DENYING is entered with it
            self._out.append(writer.body(message.get("body", b""), message.get("more_body", False)))
            if writer.complete:
                self._close_after = True
                after = WebSocketState.DENIED
        self.state = after
        return action

    def _accept(self, message: Message) -> None:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise ASGIMessageError(f"subprotocol {subprotocol!r} was not offered by the client")
        out, status = self.ws.accept(
            self.path, self.request_headers, subprotocol, message.get("headers", ())
        )
        self._out.append(out)
        self.status = status
        if status != 101:
            self.state = WebSocketState.DENIED
            self._close_after = True
            return
        self.state = _OPEN
        pending = self._pending
        if pending is not None:
            self._pending = None
            self.pending_bytes = 0
            self.receive_data(b"".join(pending))

    def _answer_http(self, status: int, response: bytes) -> None:
        self._out.append(response)
        self._close_after = True
        self.status = status
        self.state = WebSocketState.DENIED
        self._pending = None
        self.pending_bytes = 0

    def _close_frame(self, code: int, reason: str) -> None:
        out, eof = self.ws.send_close(code, reason)
        if out:
            self._out.append(out)
        if eof:
            self._close_after = True

    # From the server

    def finish(self, status: int, code: int, reason: str = "") -> WebSocketAction:
        """The application returned or failed: answer what it left unanswered.

        Before the accept, the handshake gets the HTTP ``status`` (403 when the app just
        returned, 500 when it failed); an open WebSocket gets a close frame with ``code``;
        an unfinished denial response ends with the connection.
        """
        state = self.state
        if state is WebSocketState.CONNECTING:
            text = "Forbidden" if status == 403 else "Internal Server Error"
            self._answer_http(status, error_response(status, text))
            return WebSocketAction.REJECT
        if state is _OPEN:
            self._close_frame(code, reason)
            self.state = _CLOSING
            return WebSocketAction.CLOSE
        if state is not _CLOSING:
            # DENYING (an unfinished denial), DENIED or CLOSED: nothing more will be written.
            self._close_after = True
            if state is WebSocketState.DENYING:
                self.state = WebSocketState.DENIED
        return WebSocketAction.IGNORE

    def close(self, code: int, reason: str) -> bool:
        """Start the closing handshake from the server (shutdown); False if not open."""
        if self.state is not _OPEN:
            return False
        self._close_frame(code, reason)
        self.state = _CLOSING
        return True

    def fail(self, code: int, reason: str) -> None:
        """End at once with ``code`` (a keepalive timeout): close frame, then the transport."""
        if self.state is _OPEN or self.state is _CLOSING:
            out, _ = self.ws.fail(code, reason)
            self._out.append(out)
        self._close_after = True
        self._closed(code, reason)

    def ping(self) -> None:
        """Send a keepalive ping; :attr:`awaiting_pong` is set until its pong arrives."""
        if self.state is _OPEN:
            self._out.append(self.ws.send_ping(_KEEPALIVE_PAYLOAD))
            self.awaiting_pong = True

    # Output

    @property
    def answered(self) -> bool:
        """True if the client's last bytes need an answer (a pong, a close) or end the
        connection: what :meth:`data_to_send` would return beyond the app's own sends."""
        return bool(self._out) or self._close_after

    def data_to_send(self) -> tuple[bytes, bool]:
        """The bytes to write, in order, and whether to close the transport after them."""
        # Everything produced is in _out: the connection's methods the session calls return
        # their bytes at once, so nothing waits in the library's own buffer.
        out = self._out
        if not out:
            return b"", self._close_after
        frames = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return frames, self._close_after
