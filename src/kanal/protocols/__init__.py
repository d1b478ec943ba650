"""HTTP/1.1 and WebSocket as plain objects: bytes in, events out, no sockets, no asyncio.

:mod:`kanal.server` feeds these from the network; tests feed them bytes directly.
"""

from kanal.protocols._frames import message_frame
from kanal.protocols._http import (
    STATUS_PHRASES,
    HTTPLimits,
    HTTPParser,
    ProtocolFailure,
    RequestBody,
    RequestEnd,
    RequestEvent,
    RequestStart,
    ResponseWriter,
    error_response,
)
from kanal.protocols._websocket import (
    WebSocketClosed,
    WebSocketConnection,
    WebSocketEvent,
    WebSocketMessage,
    WebSocketPong,
    handshake_problem,
)
from kanal.protocols._websocket_session import WebSocketSession
from kanal.protocols._websocket_state import WebSocketAction, WebSocketState

__all__ = [
    "STATUS_PHRASES",
    "HTTPLimits",
    "HTTPParser",
    "ProtocolFailure",
    "RequestBody",
    "RequestEnd",
    "RequestEvent",
    "RequestStart",
    "ResponseWriter",
    "WebSocketAction",
    "WebSocketClosed",
    "WebSocketConnection",
    "WebSocketEvent",
    "WebSocketMessage",
    "WebSocketPong",
    "WebSocketSession",
    "WebSocketState",
    "error_response",
    "handshake_problem",
    "message_frame",
]
