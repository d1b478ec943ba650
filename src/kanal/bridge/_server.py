"""The server side: an ASGI application that relays each connection to a bridge worker.

Each connection is one :class:`_Connection`, whose :class:`State` moves only along
:data:`TRANSITIONS`::

    ANNOUNCED --bridge.attached--> ATTACHED --bridge.detach--> DETACHED
        |                           |   ^                          |
        |                           |   +-----bridge.attached------+
        +--------> CLOSED <---------+------------------------------+

A connection is CLOSED when it was refused (no worker attached in time), when the worker
finished it (a complete HTTP response, ``bridge.done``, ``bridge.error``), when forwarding
failed (the hold overflowed, a channel stayed full), when its worker died and no other took
it over, or when the client left and the worker did not finish within a grace period. When
the server closes a connection a worker holds, it tells the worker with the disconnect
event the application would have had from the client.

A worker that dies (``kill -9``, a lost machine) is noticed through the leases of
:mod:`kanal.bridge._liveness` within a few seconds: its WebSockets go back to DETACHED and
are announced again, and an HTTP request it was serving gets 503.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import secrets
from typing import Any

from kanal._logging import CONNECTION
from kanal.bridge._liveness import DEFAULT_HEARTBEAT, Peers
from kanal.bridge._messages import (
    BRIDGE_CHANNEL,
    DISCONNECTS,
    MessageType,
    detach_ack_message,
    open_message,
    receive_message,
    resume_message,
    unbatch,
)
from kanal.bridge._scope import pack_scope
from kanal.bridge._transport import FULL_CHANNEL_PATIENCE, chunks, send_patiently
from kanal.exceptions import ChannelFull, ConfigError
from kanal.layers import BaseChannelLayer, Message, get_channel_layer
from kanal.routing import ProtocolTypeRouter
from kanal.typing import Message as Event
from kanal.typing import Receive, Scope, Send

__all__ = [
    "DEFAULT_ATTACH_TIMEOUT",
    "DEFAULT_MAX_HELD",
    "TRANSITIONS",
    "BridgeApp",
    "BridgeStats",
    "State",
]

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

# The close code of a WebSocket whose worker died with no other to take it over: RFC 6455
# section 7.4.1 registry, 1012 "Service Restart": the client should reconnect.
WORKER_LOST_CODE = 1012


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


@dataclasses.dataclass
class BridgeStats:
    """What a :class:`BridgeApp` counted since it started (``app.stats``)."""

    #: Workers taken as dead (not heard from within their lease).
    workers_lost: int = 0
    #: WebSockets of a dead worker that another worker took over.
    recovered: int = 0
    #: WebSockets closed with 1012 because their worker died and none took them over.
    closed_worker_lost: int = 0
    #: HTTP requests answered 503 (or cut short) because their worker died.
    http_worker_lost: int = 0


class BridgeApp:
    """The server side of the decoupled mode: an ASGI app that forwards to workers.

    ``attach_timeout``: seconds a new connection waits for a worker before HTTP gets 503
    and a WebSocket handshake is refused, and that a dead worker's WebSocket waits for the
    next one before it is closed with 1012. ``max_held``: client events held for a
    connection between two workers before it is closed with 1013 (try again later).
    ``heartbeat``: seconds between two heartbeats to each worker; a worker not heard from
    for three of its own heartbeats is taken as dead.
    """

    def __init__(
        self,
        layer: BaseChannelLayer | None = None,
        *,
        attach_timeout: float = DEFAULT_ATTACH_TIMEOUT,
        max_held: int = DEFAULT_MAX_HELD,
        heartbeat: float = DEFAULT_HEARTBEAT,
    ) -> None:
        if not (isinstance(max_held, int) and max_held > 0):
            raise ConfigError(f"max_held must be a positive integer, not {max_held!r}")
        if not heartbeat > 0:
            raise ConfigError(f"heartbeat must be a positive number, not {heartbeat!r}")
        self._layer = layer
        self.attach_timeout = attach_timeout
        self.max_held = max_held
        self.heartbeat = heartbeat
        self.stats = BridgeStats()
        self._peers: Peers | None = None
        self._connections: dict[str, _Connection] = {}
        # A router acknowledges lifespan and refuses other scope types, as for any app.
        self._router = ProtocolTypeRouter({"http": self._serve, "websocket": self._serve})

    @property
    def layer(self) -> BaseChannelLayer:
        """The layer (``get_channel_layer()`` unless one was given)."""
        if self._layer is None:
            self._layer = get_channel_layer()
        return self._layer

    @property
    def peers(self) -> Peers:
        """The leases with the workers that hold this server's connections."""
        if self._peers is None:
            self._peers = Peers(self.layer, heartbeat=self.heartbeat, on_lost=self._worker_lost)
        return self._peers

    def _worker_lost(self, worker: str, conns: list[str]) -> None:
        self.stats.workers_lost += 1
        for conn in conns:
            connection = self._connections.get(conn)
            if connection is not None:
                connection.worker_lost(worker)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection through the workers (and acknowledge lifespan)."""
        await self._router(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] in DISCONNECTS:
            return
        connection = _Connection(self, scope, receive, send)
        self._connections[connection.conn] = connection
        try:
            await connection.serve(first)
        finally:
            del self._connections[connection.conn]


class _Connection:
    """One client connection, relayed to whichever worker holds it."""

    def __init__(self, app: BridgeApp, scope: Scope, receive: Receive, send: Send) -> None:
        self.layer = app.layer
        self.attach_timeout = app.attach_timeout
        self.max_held = app.max_held
        self.peers = app.peers
        self.stats = app.stats
        self.scope = scope
        self.kind: str = scope["type"]
        self.receive = receive
        self.send = send
        self.conn = secrets.token_hex(8)
        self.state = State.ANNOUNCED
        self.reply = ""  # the server's channel for this connection
        self.inbound = ""  # the attached worker's channel (the last one's, when detached)
        self.worker = ""  # the attached worker's control channel
        self.announcement: Message = {}
        self.held: list[Event] = []
        self.unsent: list[Event] = []  # client events read but not yet forwarded
        self.response_started = False
        self.closed_by_server = False  # the server closed it (not the client, not the worker)
        self.close_code = 1000
        # Set when the attached worker is found dead (see _liveness).
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        # Serialises forwarding with detach and attach, so an event cannot slip past the ack.
        self.lock = asyncio.Lock()

    def worker_lost(self, worker: str) -> None:
        """The leases say the attached worker ``worker`` died."""
        if worker == self.worker and self.state is State.ATTACHED and not self.lost.done():
            self.lost.set_result(worker)

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
            self.peers.release(self.worker, self.conn)
            self._move(State.CLOSED, "the end of the connection")

    # -- ANNOUNCED: waiting for a worker ---------------------------------------------------

    async def _announce(self, first: Event) -> list[Message] | None:
        """Send ``bridge.open``; once attached, what the worker sent along. None: refused."""
        embedded = [first]
        if len(first.get("body") or b"") > _EMBED_LIMIT:
            embedded, self.unsent = [], [first]
        self.reply = await self.layer.new_channel("bridge")
        control = await self.peers.start()
        self.announcement = open_message(
            self.conn, self.reply, control, pack_scope(self.scope), embedded, CONNECTION.get()
        )
        try:
            await self.layer.send(BRIDGE_CHANNEL, self.announcement)
            async with asyncio.timeout(self.attach_timeout):
                attached, backlog = await self._wait_for_attached()
            await self._on_attached(attached)
            return backlog
        except (TimeoutError, ChannelFull) as exc:
            reason = "no worker attached in time" if isinstance(exc, TimeoutError) else str(exc)
            logger.error("bridge: %s %r refused: %s", self.kind, self.scope.get("path"), reason)
            await self._refuse()
            return None

    async def _wait_for_attached(self) -> tuple[Message, list[Message]]:
        """The ``bridge.attached`` on the reply channel, and what came after it."""
        while True:
            items = unbatch(await self.layer.receive(self.reply))
            for index, item in enumerate(items):
                if item.get("type") == MessageType.ATTACHED:
                    return item, items[index + 1 :]

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
            while True:
                waits: set[asyncio.Future[Any]] = {client, worker, self.lost}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if worker.done():
                    worker.result()  # the worker finished the connection (or sending raised)
                    return
                if client.done():
                    await self._after_client(client, worker)
                    return
                # The worker died: what it would have sent will not come.
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
                if not await self._recover():
                    return
                worker = asyncio.create_task(self._worker_to_client(recovering=True))
        finally:
            client.cancel()
            worker.cancel()
            await asyncio.gather(client, worker, return_exceptions=True)
            if self.closed_by_server:
                await self._tell_worker()

    async def _recover(self) -> bool:
        """After the worker died: 503 for HTTP; a WebSocket is announced again. False: closed."""
        self.lost = asyncio.get_running_loop().create_future()
        path = self.scope.get("path")
        async with self.lock:
            self.peers.release(self.worker, self.conn)
            if self.kind == "http":
                self.stats.http_worker_lost += 1
                logger.error("bridge: the worker serving http %r died", path)
                if not self.response_started:
                    await _plain_response(self.send, 503, b"Service Unavailable: worker lost\n")
                # Else the response stops short, and the server closes the connection.
                return False
            self._move(State.DETACHED, "the loss of the worker")
            # A new reply channel: anything the old worker still sends (it may only have
            # stalled) goes where nobody listens, not into the next worker's stream.
            self.reply = await self.layer.new_channel("bridge")
            announcement = resume_message(
                self.announcement,
                [],
                state=None,
                accepted=self.response_started,
                reply=self.reply,
            )
            try:
                await self.layer.send(BRIDGE_CHANNEL, announcement)
            except ChannelFull as exc:
                logger.error("bridge: websocket %r cannot be announced again: %s", path, exc)
                await self._close_worker_lost()
                return False
        logger.warning("bridge: the worker of websocket %r died; announced again", path)
        return True

    async def _close_worker_lost(self) -> None:
        self.stats.closed_worker_lost += 1
        self.closed_by_server = True
        logger.error(
            "bridge: no worker took over websocket %r within %g s; closed with %d",
            self.scope.get("path"),
            self.attach_timeout,
            WORKER_LOST_CODE,
        )
        await self.send({"type": "websocket.close", "code": WORKER_LOST_CODE})

    async def _tell_worker(self) -> None:
        """The server ended a connection a worker holds: give its application the disconnect."""
        if self.state is not State.ATTACHED or not self.inbound:
            return
        event: Event = (
            {"type": "http.disconnect"}
            if self.kind == "http"
            else {"type": "websocket.disconnect", "code": self.close_code}
        )
        try:
            await self.layer.send(self.inbound, receive_message(event))
        except Exception as exc:  # the worker's leases notice it after a while anyway
            logger.debug("bridge: could not tell the worker of a closed connection: %r", exc)

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
                self.close_code = code
                self.closed_by_server = True
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

    async def _worker_to_client(self, recovering: bool = False) -> None:
        """Act on the worker's messages until one finishes the connection.

        ``recovering``: the connection was announced again after its worker died; the next
        worker must attach within ``attach_timeout``, or the WebSocket is closed with 1012.
        """
        if recovering:
            try:
                async with asyncio.timeout(self.attach_timeout):
                    attached, backlog = await self._wait_for_attached()
            except TimeoutError:
                await self._close_worker_lost()
                return
            await self._on_attached(attached)
            self.stats.recovered += 1
            for item in backlog:
                if await self._handle(item):
                    return
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
                await self._on_attached(item)
            case other:
                logger.warning("bridge: ignored a %r message from a worker", other)
        return False

    async def _on_send(self, event: Event) -> bool:
        self.response_started = True
        if event.get("type") == "websocket.close":
            self.close_code = int(event.get("code") or 1000)
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
                self.peers.release(self.worker, self.conn)
                await self.layer.send(self.inbound, detach_ack_message())

    async def _on_attached(self, attached: Message) -> None:
        # A worker took the connection (first, or after another): forward what was held.
        async with self.lock:
            if not self._move(State.ATTACHED, MessageType.ATTACHED):
                return
            self.inbound = str(attached["inbound"])
            self.worker = str(attached.get("control") or "")
            self.peers.hold(self.worker, self.conn)
            held, self.held = self.held, []
            for event in held:
                await send_patiently(self.layer, self.inbound, receive_message(event))


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
