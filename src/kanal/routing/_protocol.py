"""Routing by scope type (``http``, ``websocket``, ``lifespan``...) and by channel name."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kanal.exceptions import RouteNotFound
from kanal.typing import ASGIApp, Receive, Scope, Send

__all__ = ["ChannelNameRouter", "ProtocolTypeRouter", "reject_scope"]

logger = logging.getLogger("kanal.routing")


async def reject_scope(scope: Scope, receive: Receive, send: Send, reason: str) -> None:
    """Answer a scope that no route wants: 404 for HTTP, a refused handshake for WebSocket.

    Other scope types have no way to say "not found" to a client, so they raise
    :class:`~kanal.exceptions.RouteNotFound` with ``reason``.
    """
    kind = scope.get("type")
    if kind == "http":
        logger.warning("404 for HTTP %s %s: %s", scope.get("method", "GET"), _where(scope), reason)
        body = b"Not Found\n"
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
    elif kind == "websocket":
        logger.warning("WebSocket handshake denied for %s: %s", _where(scope), reason)
        # Wait for the connect event first: closing before it is a protocol error for some
        # servers, and closing before accept is how ASGI refuses a handshake (HTTP 403).
        message = await receive()
        if message.get("type") == "websocket.connect":
            await send({"type": "websocket.close", "code": 1008})
    else:
        raise RouteNotFound(reason, value=kind)


def _where(scope: Scope) -> str:
    return repr(scope.get("root_path", "") + scope.get("path", ""))


async def _lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown for an application with nothing to set up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class ProtocolTypeRouter:
    """Send each scope to the application for its ``type``.

    ::

        application = ProtocolTypeRouter({
            "http": http_app,
            "websocket": AllowedOriginsMiddleware(URLRouter(ws_routes), ["https://*.example.com"]),
        })

    A ``lifespan`` scope with no application of its own is acknowledged (startup and
    shutdown complete at once), so servers that run lifespan do not log a failure.
    A type with no application gets 404 (HTTP), a refused handshake (WebSocket), or
    :class:`~kanal.exceptions.RouteNotFound`.
    """

    def __init__(self, application_mapping: Mapping[str, ASGIApp]) -> None:
        for key, app in application_mapping.items():
            if not callable(app):
                raise TypeError(
                    f"ProtocolTypeRouter: the application for {key!r} is not callable: {app!r}"
                    " (for a consumer class, pass Consumer.as_asgi())"
                )
        self.application_mapping = dict(application_mapping)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one connection."""
        kind = scope["type"]
        app = self.application_mapping.get(kind)
        if app is not None:
            await app(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(scope, receive, send)
        else:
            known = ", ".join(sorted(self.application_mapping)) or "none"
            await reject_scope(
                scope, receive, send, f"no application for scope type {kind!r} (known: {known})"
            )


class ChannelNameRouter:
    """Send a ``channel`` scope (a worker's) to the application for its ``channel`` name.

    ::

        ChannelNameRouter({"thumbnails": ThumbnailConsumer.as_asgi()})
    """

    def __init__(self, application_mapping: Mapping[str, ASGIApp]) -> None:
        for key, app in application_mapping.items():
            if not callable(app):
                raise TypeError(
                    f"ChannelNameRouter: the application for channel {key!r} is not callable: "
                    f"{app!r} (for a consumer class, pass Consumer.as_asgi())"
                )
        self.application_mapping = dict(application_mapping)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one channel scope."""
        if "channel" not in scope:
            raise RouteNotFound(
                f"ChannelNameRouter got a {scope.get('type')!r} scope without a 'channel' key; "
                "put it under ProtocolTypeRouter({'channel': ...})",
                value=scope.get("type"),
            )
        name = scope["channel"]
        app = self.application_mapping.get(name)
        if app is None:
            tried = tuple(sorted(self.application_mapping))
            raise RouteNotFound(
                f"no consumer for channel {name!r} (known: {', '.join(tried) or 'none'})",
                value=name,
                tried=tried,
            )
        await app(scope, receive, send)
