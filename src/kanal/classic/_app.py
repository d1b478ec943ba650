"""The ASGI application that runs a classic routing list, one task per WebSocket.

The connection's events become messages on the channels ``websocket.connect``,
``websocket.receive`` and ``websocket.disconnect``, each handled by the routed consumer (a
plain function, run by :func:`kanal.consumers.run_sync`: in a thread of its pool, with its
hooks around it), one at a time
and in order. The connection is accepted when the connect consumer returns without having
closed it. Its reply channel is a layer channel too: a listener writes what other processes
send to it, and, where the server does not offer direct delivery, the group broadcasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from typing import Any

from kanal.classic._channels import REPLY_TYPE, Message, ReplyChannel
from kanal.classic._routing import Route, find_consumers, flatten
from kanal.consumers import run_sync
from kanal.exceptions import ConfigError, LayerClosed
from kanal.layers import DIRECT_MESSAGE_TYPE, BaseChannelLayer, get_channel_layer
from kanal.typing import Receive, Scope, Send

__all__ = ["ClassicApplication", "application_from_environment"]

logger = logging.getLogger("kanal.classic")

_DIRECT_EXTENSION = "kanal.groups"
#: Where ``kanal serve module:routing`` tells its processes which routing list to run.
ROUTING_ENVIRONMENT = "KANAL_CLASSIC_ROUTING"


class ClassicApplication:
    """An ASGI application made of a classic routing list (``[route(...), ...]``)."""

    def __init__(self, routing: Iterable[Any], layer: BaseChannelLayer | None = None) -> None:
        self.routes: list[Route] = flatten(routing)
        self._layer = layer

    @property
    def layer(self) -> BaseChannelLayer:
        """The channel layer of reply channels and groups."""
        if self._layer is None:
            self._layer = get_channel_layer()
        return self._layer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await _WebSocket(self, scope, receive, send).run()
        elif kind == "http":
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"Not Found\n"})
        elif kind == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return


class _WebSocket:
    """One WebSocket of a classic application (the connection of its reply channel)."""

    def __init__(self, app: ClassicApplication, scope: Scope, receive: Receive, send: Send):
        self.app = app
        self.layer = app.layer
        self.scope = scope
        self.receive = receive
        self.base_send = send
        self.direct = _DIRECT_EXTENSION in (scope.get("extensions") or {})
        self.accepted = False
        self.closed = False
        self.joined: set[str] = set()  # groups joined through the layer (no extension)
        self.order = 0
        self.reply: ReplyChannel | None = None

    async def run(self) -> None:
        name = await self.layer.new_channel()
        self.reply = ReplyChannel(name, self)
        listener = asyncio.ensure_future(self._listen(name))
        try:
            while True:
                event = await self.receive()
                kind = event["type"]
                if kind == "websocket.connect":
                    await self._dispatch(kind, {})
                    if not self.closed and not self.accepted:
                        await self.apply({"accept": True})
                elif kind == "websocket.receive":
                    content = {"text": event.get("text"), "bytes": event.get("bytes")}
                    await self._dispatch(kind, content)
                elif kind == "websocket.disconnect":
                    self.closed = True
                    await self._dispatch(kind, {"code": event.get("code", 1000)})
                    return
        finally:
            listener.cancel()
            for group in list(self.joined):
                with contextlib.suppress(Exception):
                    await self.layer.group_discard(group, name)

    async def _dispatch(self, channel: str, content: dict[str, Any]) -> None:
        scope = self.scope
        path = scope.get("path", "")
        message = Message(
            {
                "path": path,
                "query_string": scope.get("query_string", b""),
                "headers": scope.get("headers", []),
                "client": scope.get("client"),
                "server": scope.get("server"),
                "order": self.order,
                **content,
            },
            channel,
            self.reply,
        )
        self.order += 1
        for consumer, kwargs in find_consumers(self.app.routes, channel, path):
            try:
                await run_sync(consumer, message, **kwargs)
            except Exception as exc:
                logger.error("classic consumer %r failed on %s", consumer, channel, exc_info=exc)
                if not self.closed:
                    await self.apply({"close": 1011})

    # What the reply channel and groups call (on the loop).

    async def apply(self, content: dict[str, Any]) -> None:
        """Send a reply's content: ``accept``, ``text`` or ``bytes``, then ``close``."""
        send = self.base_send
        try:
            if self.closed:
                return
            if content.get("accept") and not self.accepted:
                self.accepted = True
                await send({"type": "websocket.accept"})
            for key in ("text", "bytes"):
                value = content.get(key)
                if value is not None:
                    if not self.accepted:  # the original servers accepted on a first send
                        self.accepted = True
                        await send({"type": "websocket.accept"})
                    await send({"type": "websocket.send", key: value})
            close = content.get("close")
            if close:
                self.closed = True
                code = 1000 if close is True else int(close)
                await send({"type": "websocket.close", "code": code})
        except OSError:  # the client left meanwhile (ClientDisconnected)
            self.closed = True

    async def subscribe(self, group: str) -> None:
        """Add this connection to ``group``: at the server if it offers it, else the layer."""
        if self.direct:
            await self.base_send({"type": "kanal.group.subscribe", "group": group})
        else:
            assert self.reply is not None
            await self.layer.group_add(group, self.reply.name)
            self.joined.add(group)

    async def unsubscribe(self, group: str) -> None:
        """Remove this connection from ``group``."""
        if self.direct:
            with contextlib.suppress(OSError):
                await self.base_send({"type": "kanal.group.unsubscribe", "group": group})
        else:
            assert self.reply is not None
            self.joined.discard(group)
            await self.layer.group_discard(group, self.reply.name)

    async def _listen(self, name: str) -> None:
        # What other processes send to the reply channel, and group broadcasts when the
        # server does not write them itself.
        while True:
            try:
                message = await self.layer.receive(name)
            except LayerClosed:
                return
            except Exception as exc:
                logger.warning("classic: receiving on %s failed: %r", name, exc)
                await asyncio.sleep(0.5)
                continue
            kind = message.get("type")
            if kind == REPLY_TYPE and isinstance(message.get("content"), dict):
                await self.apply(message["content"])
            elif kind == DIRECT_MESSAGE_TYPE:
                close = message.get("close")
                await self.apply(
                    {"close": close}
                    if close is not None
                    else {"text": message.get("text"), "bytes": message.get("bytes")}
                )


def application_from_environment() -> ClassicApplication:
    """The application of the routing list named by ``$KANAL_CLASSIC_ROUTING``
    (``module:attr``); what ``kanal serve module:routing`` runs in each process."""
    from kanal.classic._routing import is_routing

    target = os.environ.get(ROUTING_ENVIRONMENT)
    if not target:
        raise ConfigError(f"{ROUTING_ENVIRONMENT} names no classic routing list")
    module_name, _, attr = target.partition(":")
    import importlib

    found: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        found = getattr(found, part)
    if not is_routing(found):
        raise ConfigError(f"{target!r} is not a classic routing list")
    return ClassicApplication(found)
