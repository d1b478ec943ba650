"""ASGI 3 type aliases shared by the routers, consumers, middleware and test tools."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "header_value"]

#: A connection scope: ``type``, ``path``, ``headers``... and whatever middleware adds.
Scope = MutableMapping[str, Any]
#: One ASGI event (``{"type": "websocket.receive", "text": ...}``).
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application: a coroutine function taking scope, receive and send.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def header_value(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case bytes) in ``scope``, else ``None``."""
    for key, value in scope.get("headers", ()):
        if bytes(key).lower() == name:
            return bytes(value)
    return None
