"""The worker side: runs an application instance for each connection a server announces."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kanal.bridge._messages import (
    BRIDGE_CHANNEL,
    DISCONNECTS,
    MessageType,
    attached_message,
    detach_message,
    done_message,
    error_message,
    resume_message,
    send_message,
)
from kanal.bridge._scope import scope_from_wire
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

    A resumed WebSocket (taken over from a stopped worker) first replays
    ``websocket.connect`` and the events that worker collected, and hides the new
    instance's ``websocket.accept`` from the client, who was accepted long ago.
    """

    def __init__(
        self,
        layer: BaseChannelLayer,
        announcement: Message,
        *,
        stopping: asyncio.Event,
        detach_timeout: float,
    ) -> None:
        self.layer = layer
        self.announcement = announcement
        self.conn: str = announcement["conn"]
        self.reply: str = announcement["reply"]
        self.kind: str = announcement["scope"].get("type", "")
        self.resumed = bool(announcement.get("resume")) and self.kind == "websocket"
        self.stopping = stopping
        self.detach_timeout = detach_timeout
        self.inbound = ""  # this worker's channel for the connection's events
        self.task: asyncio.Task[None] | None = None
        self.idle = False  # the application waits for the next event
        self.finished = False  # the application has the client's disconnect
        self.response_complete = False
        self.handed_over = False
        self._replay_connect = self.resumed
        self._swallow_accept = self.resumed
        self._pending: list[Event] = list(
            announcement.get("pending" if self.resumed else "events") or []
        )
        self._outbox = Outbox(layer, self.reply)

    async def run(self, application: ASGIApp) -> None:
        """Attach, run the application, and tell the server how it ended."""
        scope = scope_from_wire(self.announcement["scope"])
        self.inbound = await self.layer.new_channel("bridgein")
        try:
            await self._outbox.put(attached_message(self.conn, self.inbound))
            await application(scope, self.receive, self.send)
            await self._outbox.drain()
        except asyncio.CancelledError:
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
        if not self.response_complete:
            await self.layer.send(self.reply, done_message())

    async def receive(self) -> Event:
        """The application's ASGI ``receive``: replayed events first, then the server's."""
        if self._replay_connect:
            self._replay_connect = False
            return {"type": "websocket.connect"}
        event = self._pending.pop(0) if self._pending else await self._next_event()
        if event.get("type") in DISCONNECTS:
            self.finished = True
        return event

    async def _next_event(self) -> Event:
        if self.stopping.is_set() and self.kind == "websocket":
            raise asyncio.CancelledError  # ready for more: hand the connection over now
        while True:
            self.idle = True
            try:
                envelope = await self.layer.receive(self.inbound)
            finally:
                self.idle = False
            if envelope.get("type") == MessageType.RECEIVE:
                event: Event = envelope["event"]
                return event

    async def send(self, event: Event) -> None:
        """The application's ASGI ``send``: to the server, large bodies in chunks."""
        if self._swallow_accept and event.get("type") == "websocket.accept":
            self._swallow_accept = False  # the client was accepted by the first instance
            return
        for part in chunks(dict(event)):
            await self._outbox.put(send_message(part), len(part.get("body") or b""))
        if event.get("type") == "http.response.body" and not event.get("more_body"):
            self.response_complete = True

    async def _hand_over_if_stopping(self) -> bool:
        """After a cancellation: hand a live WebSocket over if this worker stops."""
        if self.kind != "websocket" or self.finished or not self.stopping.is_set():
            return False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # the cancellation is handled: the hand-over may await
        with contextlib.suppress(Exception):
            await self._outbox.drain()  # what the instance sent goes before the detach
        self.handed_over = await self._hand_over()
        return self.handed_over

    async def _hand_over(self) -> bool:
        """Detach from the server and announce the connection again for the next worker."""
        collected = list(self._pending)
        try:
            await self.layer.send(self.reply, detach_message(self.conn))
            async with asyncio.timeout(self.detach_timeout):
                collected += await self._collect_until_ack()
            await self.layer.send(BRIDGE_CHANNEL, resume_message(self.announcement, collected))
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


class BridgeWorker(Lifecycle):
    """The worker side of the decoupled mode: runs ``application`` for bridged connections.

    ``max_connections`` bounds the connections this worker serves at once; beyond it, it
    takes no new ``bridge.open`` until one ends, leaving them to other workers.
    ``shutdown_timeout``: seconds HTTP requests in progress get to finish on :meth:`stop`.
    ``detach_timeout``: seconds a stopping worker waits for a server to acknowledge a
    WebSocket's hand-over; without the acknowledgement the connection is not handed over.
    """

    def __init__(
        self,
        application: ASGIApp,
        *,
        layer: BaseChannelLayer | None = None,
        max_connections: int = 1000,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        detach_timeout: float = DEFAULT_DETACH_TIMEOUT,
    ) -> None:
        if not (isinstance(max_connections, int) and max_connections > 0):
            raise ConfigError(
                f"max_connections must be a positive integer, not {max_connections!r}"
            )
        super().__init__(layer)
        self.application = application
        self.max_connections = max_connections
        self.shutdown_timeout = shutdown_timeout
        self.detach_timeout = detach_timeout
        self.served = 0
        self.resumed = 0  # connections taken over from a stopped worker
        self.handed_over = 0  # connections handed to the next worker at shutdown
        self._instances: dict[str, _Instance] = {}
        self._taking = 0  # receives waiting on the bridge channel
        self._room = asyncio.Event()

    # -- lifecycle (kanal.worker's Lifecycle runs it: start, serve until stop, drain) -----

    def _start(self, layer: BaseChannelLayer) -> list[asyncio.Task[None]]:
        logger.info("bridge worker taking connections from %s", BRIDGE_CHANNEL)
        return [asyncio.create_task(self._take(layer), name="kanal-bridge-take")]

    # -- taking connections ----------------------------------------------------------------

    async def _take(self, layer: BaseChannelLayer) -> None:
        takers = min(_TAKERS, self.max_connections)
        await asyncio.gather(*(self._take_one(layer) for _ in range(takers)))

    async def _take_one(self, layer: BaseChannelLayer) -> None:
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
                layer, message, stopping=self._stopping, detach_timeout=self.detach_timeout
            )
            self._instances[instance.conn] = instance
            instance.task = asyncio.create_task(
                self._serve(instance), name=f"kanal-bridge:{instance.conn}"
            )

    async def _serve(self, instance: _Instance) -> None:
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
        # WebSockets waiting for their next event are handed over at once; one handling an
        # event is handed over when it next asks for one; HTTP requests run to their end.
        # Whatever is still running after shutdown_timeout is cancelled.
        for instance in list(self._instances.values()):
            if instance.task is not None and instance.kind == "websocket" and instance.idle:
                instance.task.cancel()
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
        logger.info(
            "bridge worker stopped: %d served, %d resumed, %d handed over",
            self.served,
            self.resumed,
            self.handed_over,
        )
