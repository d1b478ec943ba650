"""The server side: an ASGI application that relays each connection to a bridge worker.

Each connection is one :class:`_Connection`, whose :class:`State` moves only along
:data:`TRANSITIONS`::

    ANNOUNCED --bridge.attached--> ATTACHED --bridge.detach--> DETACHED
        |                           |   ^                          |
        |                           |   +-----bridge.attached------+
        +--------> CLOSED <---------+------------------------------+

A connection is CLOSED when it was refused (no worker attached in time), when the worker
finished it (a complete HTTP response, ``bridge.done``, ``bridge.error``), when forwarding
failed (the hold overflowed, a channel stayed full), or when the client left and the worker
did not finish within a grace period.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets

from kanal.bridge._messages import (
    BRIDGE_CHANNEL,
    DISCONNECTS,
    MessageType,
    detach_ack_message,
    open_message,
    receive_message,
    unbatch,
)
from kanal.bridge._scope import scope_to_wire
from kanal.bridge._transport import FULL_CHANNEL_PATIENCE, chunks, send_patiently
from kanal.exceptions import ChannelFull, ConfigError
from kanal.layers import BaseChannelLayer, Message, get_channel_layer
from kanal.routing import ProtocolTypeRouter
from kanal.typing import Message as Event
from kanal.typing import Receive, Scope, Send

__all__ = ["DEFAULT_ATTACH_TIMEOUT", "DEFAULT_MAX_HELD", "TRANSITIONS", "BridgeApp", "State"]

logger = logging.getLogger("kanal.bridge")

# 5 s: a worker pool that cannot take a new connection within 5 s is down or overloaded;
# answering 503 then lets a load balancer try elsewhere instead of holding the client.
DEFAULT_ATTACH_TIMEOUT = 5.0

# Events a server holds for a connection between two workers; beyond this the client is
# faster than the handover and the connection is closed (1013, try again later).
DEFAULT_MAX_HELD = 1000

# A first event up to this size rides inside the connection's announcement: a GET costs two
# hops, not four. A larger one follows as a bridge.receive, in chunks.
_EMBED_LIMIT = 64 * 1024

# Once the client has left, how long the worker gets to finish the connection before the
# server stops waiting: as long as a send waits for room in a full channel.
_CLIENT_GONE_GRACE = FULL_CHANNEL_PATIENCE


class State(enum.Enum):
    """Where a bridged connection stands, on the server side."""

    #: ``bridge.open`` is sent; no worker holds the connection yet.
    ANNOUNCED = "announced"
    #: A worker holds it: client events go to the worker's inbound channel.
    ATTACHED = "attached"
    #: Between two workers: client events are held until the next one attaches.
    DETACHED = "detached"
    #: Finished; nothing more crosses the layer for it.
    CLOSED = "closed"


#: The states each state may move to.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.ANNOUNCED: frozenset({State.ATTACHED, State.CLOSED}),
    State.ATTACHED: frozenset({State.DETACHED, State.CLOSED}),
    State.DETACHED: frozenset({State.ATTACHED, State.CLOSED}),
    State.CLOSED: frozenset(),
}


class BridgeApp:
    """The server side of the decoupled mode: an ASGI app that forwards to workers.

    ``attach_timeout``: seconds a new connection waits for a worker before HTTP gets 503
    and a WebSocket handshake is refused. ``max_held``: client events held for a connection
    between two workers before it is closed with 1013 (try again later).
    """

    def __init__(
        self,
        layer: BaseChannelLayer | None = None,
        *,
        attach_timeout: float = DEFAULT_ATTACH_TIMEOUT,
        max_held: int = DEFAULT_MAX_HELD,
    ) -> None:
        if not (isinstance(max_held, int) and max_held > 0):
            raise ConfigError(f"max_held must be a positive integer, not {max_held!r}")
        self._layer = layer
        self.attach_timeout = attach_timeout
        self.max_held = max_held
        # A router acknowledges lifespan and refuses other scope types, as for any app.
        self._router = ProtocolTypeRouter({"http": self._serve, "websocket": self._serve})

    @property
    def layer(self) -> BaseChannelLayer:
        """The layer (``get_channel_layer()`` unless one was given)."""
        if self._layer is None:
            self._layer = get_channel_layer()
        return self._layer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection through the workers (and acknowledge lifespan)."""
        await self._router(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] in DISCONNECTS:
            return
        await _Connection(self, scope, receive, send).serve(first)


class _Connection:
    """One client connection, relayed to whichever worker holds it."""

    def __init__(self, app: BridgeApp, scope: Scope, receive: Receive, send: Send) -> None:
        self.layer = app.layer
        self.attach_timeout = app.attach_timeout
        self.max_held = app.max_held
        self.scope = scope
        self.kind: str = scope["type"]
        self.receive = receive
        self.send = send
        self.conn = secrets.token_hex(8)
        self.state = State.ANNOUNCED
        self.reply = ""  # the server's channel for this connection
        self.inbound = ""  # the attached worker's channel (the last one's, when detached)
        self.held: list[Event] = []
        self.unsent: list[Event] = []  # client events read but not yet forwarded
        self.response_started = False
        # Serialises forwarding with detach and attach, so an event cannot slip past the ack.
        self.lock = asyncio.Lock()

    def _move(self, new: State, cause: str) -> bool:
        """Take the transition to ``new``; log and refuse one the table does not allow."""
        if new not in TRANSITIONS[self.state]:
            logger.warning(
                "bridge: ignored %s for %s %r in state %s",
                cause,
                self.kind,
                self.scope.get("path"),
                self.state.name,
            )
            return False
        self.state = new
        return True

    async def serve(self, first: Event) -> None:
        """Announce the connection, wait for a worker, then relay until it is finished."""
        try:
            backlog = await self._announce(first)
            if backlog is not None:
                await self._relay(backlog)
        finally:
            self._move(State.CLOSED, "the end of the connection")

    # -- ANNOUNCED: waiting for a worker ---------------------------------------------------

    async def _announce(self, first: Event) -> list[Message] | None:
        """Send ``bridge.open``; once attached, what the worker sent along. None: refused."""
        embedded = [first]
        if len(first.get("body") or b"") > _EMBED_LIMIT:
            embedded, self.unsent = [], [first]
        self.reply = await self.layer.new_channel("bridge")
        announcement = open_message(self.conn, self.reply, scope_to_wire(self.scope), embedded)
        try:
            await self.layer.send(BRIDGE_CHANNEL, announcement)
            async with asyncio.timeout(self.attach_timeout):
                return await self._wait_for_attached()
        except (TimeoutError, ChannelFull) as exc:
            reason = "no worker attached in time" if isinstance(exc, TimeoutError) else str(exc)
            logger.error("bridge: %s %r refused: %s", self.kind, self.scope.get("path"), reason)
            await self._refuse()
            return None

    async def _wait_for_attached(self) -> list[Message]:
        while True:
            items = unbatch(await self.layer.receive(self.reply))
            for index, item in enumerate(items):
                if item.get("type") == MessageType.ATTACHED:
                    self._move(State.ATTACHED, MessageType.ATTACHED)
                    self.inbound = str(item["inbound"])
                    return items[index + 1 :]

    async def _refuse(self) -> None:
        if self.kind == "http":
            await _plain_response(self.send, 503, b"Service Unavailable: no worker available\n")
        else:  # the connect event was read: closing now refuses the handshake (403)
            await self.send({"type": "websocket.close", "code": 1013})

    # -- ATTACHED and DETACHED: relaying ---------------------------------------------------

    async def _relay(self, backlog: list[Message]) -> None:
        """Carry events both ways until the worker or the client's side ends the connection."""
        for item in backlog:
            if await self._handle(item):
                return
        client = asyncio.create_task(self._client_to_worker())
        worker = asyncio.create_task(self._worker_to_client())
        try:
            await asyncio.wait({client, worker}, return_when=asyncio.FIRST_COMPLETED)
            if worker.done():
                worker.result()  # the worker finished the connection (or sending raised)
            else:
                await self._after_client(client, worker)
        finally:
            client.cancel()
            worker.cancel()
            await asyncio.gather(client, worker, return_exceptions=True)

    async def _after_client(self, client: asyncio.Task[None], worker: asyncio.Task[None]) -> None:
        """The client's side ended first: forwarding failed, or the client left."""
        error = client.exception()
        if error is not None:
            logger.error(
                "bridge: forwarding %s %r to the worker failed: %r",
                self.kind,
                self.scope.get("path"),
                error,
            )
            if self.kind == "websocket":
                code = 1013 if isinstance(error, ChannelFull) else 1011
                await self.send({"type": "websocket.close", "code": code})
            return
        # The client is gone; the application gets a bounded time to finish.
        done, _ = await asyncio.wait({worker}, timeout=_CLIENT_GONE_GRACE)
        if worker in done:
            worker.result()
        else:
            logger.warning(
                "bridge: no worker finished %s %r after the client left",
                self.kind,
                self.scope.get("path"),
            )

    async def _client_to_worker(self) -> None:
        """Forward the client's events, in order, until its disconnect."""
        while True:
            event = self.unsent.pop(0) if self.unsent else await self.receive()
            parts = chunks(event) if self.kind == "http" else [event]
            async with self.lock:
                for part in parts:
                    await self._forward(part)
            if event["type"] in DISCONNECTS:
                return

    async def _forward(self, event: Event) -> None:
        """Send one client event to the worker, or hold it between two workers."""
        if self.state is State.ATTACHED:
            await send_patiently(self.layer, self.inbound, receive_message(event))
            return
        if len(self.held) >= self.max_held:
            raise ChannelFull(
                f"{self.max_held} events held while no worker was attached",
                channel=self.reply,
                capacity=self.max_held,
            )
        self.held.append(event)

    async def _worker_to_client(self) -> None:
        """Act on the worker's messages until one finishes the connection."""
        while True:
            for item in unbatch(await self.layer.receive(self.reply)):
                if await self._handle(item):
                    return

    async def _handle(self, item: Message) -> bool:
        """Act on one message from the worker; True when it finishes the connection."""
        match item.get("type"):
            case MessageType.SEND:
                return await self._on_send(item["event"])
            case MessageType.DONE:
                return True
            case MessageType.ERROR:
                await self._on_error(str(item.get("error")))
                return True
            case MessageType.DETACH:
                await self._on_detach()
            case MessageType.ATTACHED:
                await self._on_attached(str(item["inbound"]))
            case other:
                logger.warning("bridge: ignored a %r message from a worker", other)
        return False

    async def _on_send(self, event: Event) -> bool:
        self.response_started = True
        await self.send(event)
        # A complete HTTP response ends the exchange; no bridge.done follows it.
        return bool(event.get("type") == "http.response.body" and not event.get("more_body"))

    async def _on_error(self, error: str) -> None:
        logger.error(
            "bridge: the application failed for %s %r: %s",
            self.kind,
            self.scope.get("path"),
            error,
        )
        if self.kind == "http" and not self.response_started:
            await _plain_response(self.send, 500, b"Internal Server Error\n")
        elif self.kind == "websocket":
            await self.send({"type": "websocket.close", "code": 1011})

    async def _on_detach(self) -> None:
        # The worker hands the connection over: hold new events, and tell it that everything
        # sent so far is in its channel (FIFO, so the ack comes last).
        async with self.lock:
            if self._move(State.DETACHED, MessageType.DETACH):
                await self.layer.send(self.inbound, detach_ack_message())

    async def _on_attached(self, inbound: str) -> None:
        # The next worker took over: forward what was held, then carry on.
        async with self.lock:
            if not self._move(State.ATTACHED, MessageType.ATTACHED):
                return
            self.inbound = inbound
            held, self.held = self.held, []
            for event in held:
                await send_patiently(self.layer, inbound, receive_message(event))


async def _plain_response(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
