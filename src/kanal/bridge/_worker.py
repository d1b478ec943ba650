"""The worker side: runs an application instance for each connection a server announces."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kanal._logging import CONNECTION, logs_connections
from kanal.bridge._liveness import DEFAULT_HEARTBEAT, Peers
from kanal.bridge._messages import (
    BRIDGE_CHANNEL,
    DISCONNECTS,
    MessageType,
    attached_message,
    detach_message,
    done_message,
    error_message,
    receive_message,
    resume_message,
    send_message,
    suspend_message,
)
from kanal.bridge._scope import scope_from_wire, unpack_scope
from kanal.bridge._transport import Outbox, chunks
from kanal.exceptions import ConfigError
from kanal.layers import BaseChannelLayer, Message
from kanal.typing import ASGIApp
from kanal.typing import Message as Event
from kanal.worker import DEFAULT_SHUTDOWN_TIMEOUT
from kanal.worker._lifecycle import Lifecycle

__all__ = ["DEFAULT_DETACH_TIMEOUT", "BridgeWorker"]

logger = logging.getLogger("kanal.bridge")

# How long a stopping worker waits for the server to acknowledge a detach: a live server
# answers within a layer round trip or two; one that has not after 10 s is gone.
DEFAULT_DETACH_TIMEOUT = 10.0

# Receivers a bridge worker keeps waiting on the bridge channel, so a burst of new
# connections is taken in parallel (a layer may hand several waiting receivers their
# messages in one round trip).
_TAKERS = 16


class _Instance:
    """One connection on this worker: the ``receive`` and ``send`` its application gets.

    A WebSocket resumed from another worker starts with ``websocket.resume`` (the state the
    last instance gave in ``websocket.suspended``) or, when there is no state (the last
    instance could not give one, or its worker died), with a replayed
    ``websocket.connect``, whose ``websocket.accept`` is then hidden from the client, who was
    accepted long ago. Either way the events collected during the hand-over come next.
    """

    def __init__(
        self,
        layer: BaseChannelLayer,
        announcement: Message,
        *,
        stopping: asyncio.Event,
        detach_timeout: float,
        peers: Peers,
    ) -> None:
        self.layer = layer
        self.announcement = announcement
        self.conn: str = announcement["conn"]
        self.reply: str = announcement["reply"]
        self.server: str = str(announcement.get("control") or "")
        wire = announcement["scope"]
        # Packed by the server (pack_scope), or a dict from scope_to_wire.
        self.scope = unpack_scope(wire) if isinstance(wire, bytes) else scope_from_wire(wire)
        self.kind: str = self.scope.get("type", "")
        self.resumed = bool(announcement.get("resume")) and self.kind == "websocket"
        self.stopping = stopping
        self.detach_timeout = detach_timeout
        self.peers = peers
        self.inbound = ""  # this worker's channel for the connection's events
        self.task: asyncio.Task[None] | None = None
        self.idle = False  # the application waits for the next event
        self.finished = False  # the application has the client's disconnect
        self.response_complete = False
        self.handed_over = False
        self.revoked = False  # the server gave the connection to another worker
        # The client was accepted (by this instance, or before the hand-over).
        self.accepted = self.resumed and bool(announcement.get("accepted", True))
        self.closed = False  # the application sent websocket.close
        self._swallow_accept = self.accepted
        self._first: Event | None = None
        if self.resumed:
            state = announcement.get("state")
            self._first = (
                {"type": "websocket.connect"}
                if state is None
                else {
                    "type": "websocket.resume",
                    "state": state,
                    "groups": list(announcement.get("groups") or []),
                }
            )
        self._pending: list[Event] = list(
            announcement.get("pending" if self.resumed else "events") or []
        )
        self._suspend_requested = False  # bridge.suspend is on its way in the inbound
        self._suspend_delivered = False  # the application was given websocket.suspend
        self._suspended: tuple[dict[str, Any] | None, list[str]] | None = None
        self._outbox = Outbox(layer, self.reply)

    async def run(self, application: ASGIApp) -> None:
        """Attach, run the application, and tell the server how it ended."""
        scope = self.scope
        if self.kind == "websocket":
            # Tells the application it may get websocket.suspend (see docs/modes.md).
            scope["extensions"]["kanal.handover"] = {}
        self.inbound = await self.layer.new_channel("bridgein")
        control = await self.peers.start()
        try:
            await self._outbox.put(attached_message(self.conn, self.inbound, control))
            self.peers.hold(self.server, self.conn)
            await application(scope, self.receive, self.send)
            await self._outbox.drain()
        except asyncio.CancelledError:
            if self.revoked:
                _uncancel()
                return  # the server has given the connection to another worker
            if not await self._hand_over_if_stopping():
                raise
            return
        except Exception as exc:
            logger.error(
                "bridge worker: the application failed on %s %r",
                self.kind,
                scope.get("path"),
                exc_info=exc,
            )
            with contextlib.suppress(Exception):
                await self._outbox.drain()
            await self.layer.send(self.reply, error_message(exc))
            return
        finally:
            self.peers.release(self.server, self.conn)
        if self._suspend_delivered and not self.closed and not self.finished:
            # The application returned after websocket.suspend: the next worker resumes it.
            state, groups = self._suspended or (None, [])
            self.handed_over = await self._hand_over(state, groups)
            return
        if not self.response_complete:
            await self.layer.send(self.reply, done_message())

    async def request_suspend(self) -> None:
        """This worker stops: queue ``bridge.suspend`` behind the events already received."""
        if self.kind != "websocket" or self.finished or self._suspend_requested or not self.inbound:
            return  # an instance not attached yet is suspended at its first receive
        self._suspend_requested = True
        await self.layer.send(self.inbound, suspend_message())

    async def end(self, event: Event) -> None:
        """Give the application ``event`` (a disconnect) after what it has not read yet."""
        if self.inbound and not self.finished:
            await self.layer.send(self.inbound, receive_message(event))

    def revoke(self) -> None:
        """The server no longer has this worker hold the connection: end the instance."""
        if self.task is not None and not self.task.done():
            self.revoked = True
            self.task.cancel()

    async def receive(self) -> Event:
        """The application's ASGI ``receive``: replayed events first, then the server's."""
        if self._first is not None:
            event, self._first = self._first, None
            return event
        event = self._pending.pop(0) if self._pending else await self._next_event()
        if event.get("type") in DISCONNECTS:
            self.finished = True
        return event

    async def _next_event(self) -> Event:
        if self._suspend_delivered:
            # Asked for more after websocket.suspend: the application does not know the
            # extension. Hand the connection over without a state (connect is replayed).
            raise asyncio.CancelledError
        if self.stopping.is_set() and self.kind == "websocket" and not self._suspend_requested:
            return self._suspend()  # it stopped before this instance had its channel
        while True:
            self.idle = True
            try:
                envelope = await self.layer.receive(self.inbound)
            finally:
                self.idle = False
            kind = envelope.get("type")
            if kind == MessageType.RECEIVE:
                event: Event = envelope["event"]
                return event
            if kind == MessageType.SUSPEND and not self.finished:
                return self._suspend()

    def _suspend(self) -> Event:
        if not self.accepted:
            # Still in the handshake: the next worker runs it again, accept included.
            raise asyncio.CancelledError
        self._suspend_delivered = True
        return {"type": "websocket.suspend"}

    async def send(self, event: Event) -> None:
        """The application's ASGI ``send``: to the server, large bodies in chunks."""
        kind = event.get("type")
        if kind == "websocket.suspended":
            state = event.get("state")
            groups = [str(group) for group in event.get("groups") or []]
            self._suspended = (dict(state) if isinstance(state, dict) else None, groups)
            return
        if kind == "websocket.accept":
            if self._swallow_accept:
                self._swallow_accept = False  # the client was accepted by the first instance
                return
            self.accepted = True
        elif kind == "websocket.close":
            self.closed = True
        for part in chunks(dict(event)):
            await self._outbox.put(send_message(part), len(part.get("body") or b""))
        if kind == "http.response.body" and not event.get("more_body"):
            self.response_complete = True

    async def _hand_over_if_stopping(self) -> bool:
        """After a cancellation: hand a live WebSocket over if this worker stops."""
        if self.kind != "websocket" or self.finished or not self.stopping.is_set():
            return False
        _uncancel()  # the cancellation is handled: the hand-over may await
        with contextlib.suppress(Exception):
            await self._outbox.drain()  # what the instance sent goes before the detach
        self.handed_over = await self._hand_over(None, [])
        return self.handed_over

    async def _hand_over(self, state: dict[str, Any] | None, groups: list[str]) -> bool:
        """Detach from the server and announce the connection again for the next worker."""
        self.peers.release(self.server, self.conn)  # the server stops listing it now
        collected = list(self._pending)
        try:
            await self._outbox.drain()
            await self.layer.send(self.reply, detach_message(self.conn))
            async with asyncio.timeout(self.detach_timeout):
                collected += await self._collect_until_ack()
            resume = resume_message(
                self.announcement, collected, state=state, groups=groups, accepted=self.accepted
            )
            await self.layer.send(BRIDGE_CHANNEL, resume)
        except TimeoutError:
            logger.warning(
                "bridge worker: the server of connection %s did not acknowledge the handover "
                "within %g s (it is probably gone)",
                self.conn,
                self.detach_timeout,
            )
            return False
        except Exception as exc:
            logger.error("bridge worker: could not hand over connection %s: %r", self.conn, exc)
            return False
        return True

    async def _collect_until_ack(self) -> list[Event]:
        """The client events already on their way; the ack comes after them (FIFO)."""
        collected: list[Event] = []
        while True:
            envelope = await self.layer.receive(self.inbound)
            if envelope.get("type") == MessageType.DETACH_ACK:
                return collected
            if envelope.get("type") == MessageType.RECEIVE:
                collected.append(envelope["event"])


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


class BridgeWorker(Lifecycle):
    """The worker side of the decoupled mode: runs ``application`` for bridged connections.

    ``max_connections`` bounds the connections this worker serves at once; beyond it, it
    takes no new ``bridge.open`` until one ends, leaving them to other workers.
    ``shutdown_timeout``: seconds HTTP requests in progress get to finish on :meth:`stop`.
    ``detach_timeout``: seconds a stopping worker waits for a server to acknowledge a
    WebSocket's hand-over; without the acknowledgement the connection is not handed over.
    ``heartbeat``: seconds between two heartbeats to each server; a server not heard from
    for three of its heartbeats is taken as dead, and its connections' applications get a
    disconnect (code 1006).
    """

    def __init__(
        self,
        application: ASGIApp,
        *,
        layer: BaseChannelLayer | None = None,
        max_connections: int = 1000,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        detach_timeout: float = DEFAULT_DETACH_TIMEOUT,
        heartbeat: float = DEFAULT_HEARTBEAT,
    ) -> None:
        if not heartbeat > 0:
            raise ConfigError(f"heartbeat must be a positive number, not {heartbeat!r}")
        if not (isinstance(max_connections, int) and max_connections > 0):
            raise ConfigError(
                f"max_connections must be a positive integer, not {max_connections!r}"
            )
        super().__init__(layer)
        self.application = application
        self.max_connections = max_connections
        self.shutdown_timeout = shutdown_timeout
        self.detach_timeout = detach_timeout
        self.heartbeat = heartbeat
        self.served = 0
        self.resumed = 0  # connections taken over from a stopped worker
        self.handed_over = 0  # connections handed to the next worker at shutdown
        self._instances: dict[str, _Instance] = {}
        self._peers: Peers | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self._taking = 0  # receives waiting on the bridge channel
        self._room = asyncio.Event()

    # -- lifecycle (kanal.worker's Lifecycle runs it: start, serve until stop, drain) -----

    def _start(self, layer: BaseChannelLayer) -> list[asyncio.Task[None]]:
        logger.info("bridge worker taking connections from %s", BRIDGE_CHANNEL)
        return [asyncio.create_task(self._take(layer), name="kanal-bridge-take")]

    # -- taking connections ----------------------------------------------------------------

    async def _take(self, layer: BaseChannelLayer) -> None:
        self._peers = Peers(
            layer,
            heartbeat=self.heartbeat,
            on_lost=self._server_lost,
            on_forgotten=self._forgotten,
            prefix="bridgeworker",
        )
        takers = min(_TAKERS, self.max_connections)
        await asyncio.gather(*(self._take_one(layer, self._peers) for _ in range(takers)))

    def _server_lost(self, server: str, conns: list[str]) -> None:
        # The client is as good as gone: each application gets the disconnect it would
        # have had from the client (1006: closed abnormally, no close frame).
        for conn in conns:
            instance = self._instances.get(conn)
            if instance is not None:
                gone: Event = (
                    {"type": "http.disconnect"}
                    if instance.kind == "http"
                    else {"type": "websocket.disconnect", "code": 1006}
                )
                chore = asyncio.create_task(instance.end(gone))
                self._chores.add(chore)
                chore.add_done_callback(self._chores.discard)

    def _forgotten(self, server: str, conns: list[str]) -> None:
        for conn in conns:
            instance = self._instances.get(conn)
            if instance is not None:
                logger.warning(
                    "bridge worker: the server no longer has this worker hold connection %s "
                    "(closed, or given to another worker); its instance is ended",
                    conn,
                )
                instance.revoke()

    async def _take_one(self, layer: BaseChannelLayer, peers: Peers) -> None:
        while True:
            while len(self._instances) + self._taking >= self.max_connections:
                self._room.clear()
                await self._room.wait()
            self._taking += 1
            try:
                message = await layer.receive(BRIDGE_CHANNEL)
            finally:
                self._taking -= 1
            if message.get("type") != MessageType.OPEN or "conn" not in message:
                logger.error("bridge worker: ignored a malformed message: %r", message)
                continue
            instance = _Instance(
                layer,
                message,
                stopping=self._stopping,
                detach_timeout=self.detach_timeout,
                peers=peers,
            )
            self._instances[instance.conn] = instance
            instance.task = asyncio.create_task(
                self._serve(instance), name=f"kanal-bridge:{instance.conn}"
            )

    async def _serve(self, instance: _Instance) -> None:
        # This task's lines carry the id the server's lines about the connection carry.
        if logs_connections():
            CONNECTION.set(str(instance.announcement.get("log_id") or instance.conn))
        self.served += 1
        if instance.resumed:
            self.resumed += 1
        try:
            await instance.run(self.application)
        finally:
            self._instances.pop(instance.conn, None)
            self._room.set()
            if instance.handed_over:
                self.handed_over += 1

    # -- stopping --------------------------------------------------------------------------

    async def _drain(self, layer: BaseChannelLayer) -> None:
        # Each WebSocket's application gets websocket.suspend once it has handled the events
        # already here, and is handed over when it returns; HTTP requests run to their end.
        # Whatever is still running after shutdown_timeout is cancelled.
        await asyncio.gather(
            *(instance.request_suspend() for instance in list(self._instances.values())),
            return_exceptions=True,
        )
        tasks = [i.task for i in self._instances.values() if i.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.shutdown_timeout)
        leftover = [i.task for i in self._instances.values() if i.task is not None]
        for task in leftover:
            task.cancel()
        if leftover:
            logger.warning(
                "bridge worker: %d connection(s) did not finish within %g s and were cancelled",
                len(leftover),
                self.shutdown_timeout,
            )
            await asyncio.gather(*leftover, return_exceptions=True)
        if self._peers is not None:
            await self._peers.aclose()
        logger.info(
            "bridge worker stopped: %d served, %d resumed, %d handed over",
            self.served,
            self.resumed,
            self.handed_over,
        )
