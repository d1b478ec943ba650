"""The ASGI WebSocket state machine: which message the application may send when, as a table.

One WebSocket goes through these states (ASGI's WebSocket spec, RFC 6455 §4 and §7)::

    CONNECTING ── websocket.accept ─────────────────────► OPEN ── websocket.close ──► CLOSING
    CONNECTING ── websocket.close (a 403) ──────────────► DENIED
    CONNECTING ── websocket.http.response.start ────────► DENYING
    DENYING ───── websocket.http.response.body, the last ──► DENIED
    any state ─── the client's close frame, a failure, the connection lost ──► CLOSED
                  (the application receives websocket.disconnect, once)

:data:`TRANSITIONS` maps each state and application message type to the action the session
takes and the state it moves to, or to the error the application gets. A message type the
table does not name is an :class:`~kanal.exceptions.ASGIMessageError` in every state. The
server's own moves are methods of :class:`~kanal.protocols.WebSocketSession`: ``close()``
at shutdown (OPEN to CLOSING), ``finish()`` when the application returns (the answer it
left unsent), ``fail()`` when a keepalive pong is overdue (to CLOSED). The server reads the
state (to time a close, say) but never changes it.
"""

from __future__ import annotations

import enum
from typing import Final

from kanal.exceptions import ASGIMessageError, ClientDisconnected, ServerError

__all__ = ["TRANSITIONS", "Refusal", "WebSocketAction", "WebSocketState"]


class WebSocketState(enum.IntEnum):
    """Where a WebSocket is, as far as its application is concerned."""

    #: The handshake waits for the application's answer; data the client sends early is held.
    CONNECTING = 0
    #: Accepted (101 sent): messages flow both ways.
    OPEN = 1
    #: Our close frame is sent (the application's, or the server's at shutdown); the
    #: client's answer is awaited (RFC 6455 §7.1.2).
    CLOSING = 2
    #: The WebSocket is over: the client's close frame, a failure or a lost connection.
    CLOSED = 3
    #: An HTTP response is being sent instead of the 101 (the denial-response extension).
    DENYING = 4
    #: The handshake was refused: 403, a complete denial response, or an invalid request.
    DENIED = 5


class WebSocketAction(enum.Enum):
    """What the session does with an application message the table allows."""

    ACCEPT = "accept"  # answer the handshake with 101; the held data is read then
    REJECT = "reject"  # answer the handshake with 403 Forbidden (ASGI: close before accept)
    START_DENIAL = "start_denial"  # hold the denial response's status and headers
    DENIAL_BODY = "denial_body"  # write a piece of the denial response
    SEND = "send"  # frame a text or binary message
    CLOSE = "close"  # send a close frame and wait for the client's
    IGNORE = "ignore"  # nothing to do (a second close)
    SUBSCRIBE = "subscribe"  # the server's direct delivery: add the connection to a group
    UNSUBSCRIBE = "unsubscribe"  # remove it from one


class Refusal:
    """A message the application may not send in a state: the error it gets instead."""

    __slots__ = ("error", "text")

    def __init__(self, error: type[ServerError], text: str) -> None:
        self.error = error
        self.text = text

    def exception(self, path: str) -> ServerError:
        """The error to raise, naming the WebSocket's path."""
        return self.error(f"{self.text} (WebSocket {path})")


_S = WebSocketState
_A = WebSocketAction
_GONE: Final = Refusal(ClientDisconnected, "the WebSocket is closed")
_NOT_YET: Final = Refusal(ASGIMessageError, "websocket.send before websocket.accept")
_NO_START: Final = Refusal(ASGIMessageError, "websocket.http.response.body before its start")
_ANSWERED: Final = Refusal(ASGIMessageError, "the handshake was already answered")
_DENIED: Final = Refusal(ASGIMessageError, "the handshake was answered with an HTTP response")
_SUBSCRIBE: Final = "kanal.group.subscribe"
_UNSUBSCRIBE: Final = "kanal.group.unsubscribe"

#: state -> application message type -> (action, next state) or the refusal.
TRANSITIONS: Final[
    dict[WebSocketState, dict[str, tuple[WebSocketAction, WebSocketState] | Refusal]]
] = {
    _S.CONNECTING: {
        # ACCEPT lands in DENIED instead when the request fails the library's own
        # handshake checks at this point: the HTTP error it builds is the answer.
        "websocket.accept": (_A.ACCEPT, _S.OPEN),
        "websocket.close": (_A.REJECT, _S.DENIED),
        "websocket.http.response.start": (_A.START_DENIAL, _S.DENYING),
        "websocket.send": _NOT_YET,
        "websocket.http.response.body": _NO_START,
        _SUBSCRIBE: (_A.SUBSCRIBE, _S.CONNECTING),
        _UNSUBSCRIBE: (_A.UNSUBSCRIBE, _S.CONNECTING),
    },
    _S.OPEN: {
        "websocket.send": (_A.SEND, _S.OPEN),
        "websocket.close": (_A.CLOSE, _S.CLOSING),
        "websocket.accept": _ANSWERED,
        "websocket.http.response.start": _ANSWERED,
        "websocket.http.response.body": _ANSWERED,
        _SUBSCRIBE: (_A.SUBSCRIBE, _S.OPEN),
        _UNSUBSCRIBE: (_A.UNSUBSCRIBE, _S.OPEN),
    },
    _S.CLOSING: {
        # Our close frame went out: nothing may follow it (RFC 6455 §5.5.1).
        "websocket.send": _GONE,
        "websocket.close": (_A.IGNORE, _S.CLOSING),
        "websocket.accept": _ANSWERED,
        "websocket.http.response.start": _ANSWERED,
        "websocket.http.response.body": _ANSWERED,
        _SUBSCRIBE: (_A.IGNORE, _S.CLOSING),
        _UNSUBSCRIBE: (_A.IGNORE, _S.CLOSING),
    },
    _S.CLOSED: {
        # ASGI: a send on a closed connection raises an OSError (ClientDisconnected is one);
        # a close is a no-op, so that cleanup code may always send one.
        "websocket.send": _GONE,
        "websocket.close": (_A.IGNORE, _S.CLOSED),
        "websocket.accept": _GONE,
        "websocket.http.response.start": _GONE,
        "websocket.http.response.body": _GONE,
        _SUBSCRIBE: (_A.IGNORE, _S.CLOSED),
        _UNSUBSCRIBE: (_A.IGNORE, _S.CLOSED),
    },
    _S.DENYING: {
        # DENIAL_BODY moves to DENIED with the piece that has more_body=False.
        "websocket.http.response.body": (_A.DENIAL_BODY, _S.DENYING),
        "websocket.send": _DENIED,
        "websocket.close": _DENIED,
        "websocket.accept": _ANSWERED,
        "websocket.http.response.start": _ANSWERED,
        _SUBSCRIBE: (_A.IGNORE, _S.DENYING),
        _UNSUBSCRIBE: (_A.IGNORE, _S.DENYING),
    },
    _S.DENIED: {
        "websocket.send": _DENIED,
        "websocket.close": _DENIED,
        "websocket.accept": _ANSWERED,
        "websocket.http.response.start": _ANSWERED,
        "websocket.http.response.body": _ANSWERED,
        _SUBSCRIBE: (_A.IGNORE, _S.DENIED),
        _UNSUBSCRIBE: (_A.IGNORE, _S.DENIED),
    },
}
