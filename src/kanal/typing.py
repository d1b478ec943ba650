"""The ASGI 3 types, defined once for every package of kanal (and for its users).

The server hands applications plain dicts and accepts any mapping back, so these are the
wide ``MutableMapping`` types (as starlette's): an application typed with them, with
asgiref's TypedDicts, or with plain dicts is accepted wherever kanal takes an ``ASGIApp``.
This module imports nothing of kanal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "header_value"]

#: A connection scope: ``type``, ``path``, ``headers``... and whatever middleware adds.
Scope: TypeAlias = MutableMapping[str, Any]
#: One ASGI event (``{"type": "websocket.receive", "text": ...}``).
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application: a coroutine function taking scope, receive and send.
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


def header_value(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case bytes) in ``scope``, else ``None``."""
    for key, value in scope.get("headers", ()):
        if bytes(key).lower() == name:
            return bytes(value)
    return None
