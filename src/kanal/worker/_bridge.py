"""The decoupled mode: interface servers hold sockets, workers run the application.

The server side is an ASGI application, :class:`BridgeApp` (``kanal serve --bridge``, or
``kanal serve kanal.worker.bridge:application``). For each connection it:

1. announces the connection on the ``kanal.bridge`` channel with its scope and a reply
   channel of its own (``bridge.open``);
2. waits for a worker to attach (``bridge.attached``, naming the worker's inbound channel for
   this connection) — if none does within ``attach_timeout``, HTTP gets 503 and a WebSocket
   handshake is refused;
3. forwards the client's events, in order, to that inbound channel, and sends the client
   whatever arrives on the reply channel (``bridge.send``).

The worker side, :class:`BridgeWorker` (``kanal worker --bridge module:app``), takes
``bridge.open`` messages from the shared channel and runs one application instance per
connection. Both directions use process-specific channels, the layer's fast path.

When a worker stops, its WebSocket connections stay open. For each, once its instance is idle
(waiting for the next event), the worker cancels the instance (its consumer cleans up, e.g.
leaves its groups), tells the server to hold new events (``bridge.detach``), collects the
events already on their way until the server's ``bridge.detach_ack`` (the channel is FIFO,
so nothing is missed), and announces the connection again with ``resume`` and those events.
The next worker replays ``websocket.connect`` to a new instance, swallows its
``websocket.accept`` (the client was accepted already), replays the collected events, and
attaches; the server then forwards what it held. Nothing is lost or reordered. HTTP requests
in progress are finished before the worker exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from kanal.exceptions import ChannelFull, ConfigError, LayerClosed
from kanal.layers import BaseChannelLayer, Message, get_channel_layer

__all__ = [
    "BRIDGE_CHANNEL",
    "DEFAULT_ATTACH_TIMEOUT",
    "BridgeApp",
    "BridgeWorker",
    "scope_from_wire",
    "scope_to_wire",
]

logger = logging.getLogger("kanal.worker.bridge")

#: Where servers announce connections and workers take them from.
BRIDGE_CHANNEL = "kanal.bridge"
# Events a server holds for a connection between two workers; beyond this the client is
# faster than the handover and the connection is closed (1013, try again later).
_MAX_HELD = 1000
# How long a stopping worker waits for the server to acknowledge a detach.
_DETACH_TIMEOUT = 10.0

# 5 s: a worker pool that cannot take a new connection within 5 s is down or overloaded;
# answering 503 then lets a load balancer try elsewhere instead of holding the client.
DEFAULT_ATTACH_TIMEOUT = 5.0

# Request and response bodies cross the layer in chunks well below its 1 MiB message limit.
_CHUNK = 256 * 1024
# Receivers a bridge worker keeps waiting on the bridge channel.
_TAKERS = 16
# A first event up to this size rides inside the connection's announcement.
_EMBED_LIMIT = 64 * 1024

# How long a send waits for room in a full channel before giving up (the other side is
# stuck or gone): long enough to ride out a burst, short enough to free the connection.
_FULL_CHANNEL_PATIENCE = 10.0


def scope_to_wire(scope: dict[str, Any]) -> dict[str, Any]:
    """The parts of an ASGI scope that can travel through the layer (msgpack types).

    ``state`` (lifespan state, arbitrary objects) and ``extensions`` stay with the server.
    """
    wire: dict[str, Any] = {}
    for key, value in scope.items():
        if key in ("state", "extensions", "app"):
            continue
        if key == "headers":
            wire[key] = [[bytes(name), bytes(val)] for name, val in value]
        elif isinstance(value, tuple):
            wire[key] = list(value)
        elif isinstance(value, (str, bytes, int, float, bool, list, dict)) or value is None:
            wire[key] = value
    return wire


def scope_from_wire(wire: dict[str, Any]) -> dict[str, Any]:
    """Turn a scope from :func:`scope_to_wire` back into the shapes ASGI apps expect."""
    scope = dict(wire)
    scope["headers"] = [(name, val) for name, val in wire.get("headers", [])]
    for key in ("client", "server"):
        if isinstance(scope.get(key), list):
            scope[key] = tuple(scope[key])
    scope.setdefault("extensions", {})
    scope["state"] = {}
    return scope


async def _send_patiently(layer: BaseChannelLayer, channel: str, message: Message) -> None:
    """``send``, waiting for room while the receiver catches up (backpressure)."""
    delay = 0.001
    deadline = time.monotonic() + _FULL_CHANNEL_PATIENCE
    while True:
        try:
            await layer.send(channel, message)
            return
        except ChannelFull:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)


def _items(message: Message) -> list[Message]:
    """The envelopes in a message from a worker (a ``bridge.batch`` holds several)."""
    if message.get("type") == "bridge.batch":
        items: list[Message] = message["items"]
        return items
    return [message]


class _Outbox:
    """A worker's messages to one connection's server, coalesced into batches.

    ``put`` queues an envelope and returns; a flusher task sends everything queued so far
    as one ``bridge.batch`` message, so what an application sends in one go (a response's
    start and body, or ``attached`` and the first answer) crosses the layer as one message.
    ``put`` waits while more than ``_CHUNK`` bytes are queued (backpressure).
    """

    __slots__ = ("_error", "_flusher", "_items", "_size", "channel", "layer")

    def __init__(self, layer: BaseChannelLayer, channel: str) -> None:
        self.layer = layer
        self.channel = channel
        self._items: list[Message] = []
        self._size = 0
        self._flusher: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def put(self, item: Message, size: int = 0) -> None:
        if self._error is not None:
            raise self._error
        self._items.append(item)
        self._size += size
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        if self._size > _CHUNK:
            await self.drain()

    async def _flush(self) -> None:
        try:
            while self._items:
                batch: list[Message] = []
                size = 0
                while self._items and (not batch or size + self._weight(self._items[0]) <= _CHUNK):
                    item = self._items.pop(0)
                    size += self._weight(item)
                    batch.append(item)
                self._size = max(0, self._size - size)
                message = batch[0] if len(batch) == 1 else {"type": "bridge.batch", "items": batch}
                await _send_patiently(self.layer, self.channel, message)
        except Exception as exc:
            self._error = exc
            self._items.clear()
            raise

    @staticmethod
    def _weight(item: Message) -> int:
        event = item.get("event") or {}
        return len(event.get("body") or event.get("bytes") or event.get("text") or "") + 64

    async def drain(self) -> None:
        """Wait until everything queued has been sent; raise what sending raised."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        if self._error is not None:
            raise self._error


def _chunks(event: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Split an event whose ``key`` holds a large body into several ``more_body`` events."""
    body = event.get(key) or b""
    if len(body) <= _CHUNK:
        return [event]
    parts = [body[i : i + _CHUNK] for i in range(0, len(body), _CHUNK)]
    more = bool(event.get("more_body", False))
    return [
        {**event, key: part, "more_body": more or index < len(parts) - 1}
        for index, part in enumerate(parts)
    ]


class _Link:
    """Where a server sends a connection's events: a worker's channel, or a local hold."""

    __slots__ = ("held", "inbound", "lock")

    def __init__(self, inbound: str) -> None:
        self.inbound: str | None = inbound
        self.held: list[dict[str, Any]] = []
        # Serialises forwarding with detach/attach, so an event cannot slip past the ack.
        self.lock = asyncio.Lock()


class BridgeApp:
    """The server side of the decoupled mode: an ASGI app that forwards to workers."""

    def __init__(
        self,
        layer: BaseChannelLayer | None = None,
        *,
        attach_timeout: float = DEFAULT_ATTACH_TIMEOUT,
    ) -> None:
        self._layer = layer
        self.attach_timeout = attach_timeout

    @property
    def layer(self) -> BaseChannelLayer:
        """The layer (``get_channel_layer()`` unless one was given)."""
        if self._layer is None:
            self._layer = get_channel_layer()
        return self._layer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve one connection through the workers."""
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind not in ("http", "websocket"):
            raise ConfigError(f"the bridge forwards http and websocket scopes, not {kind!r}")
        layer = self.layer
        # The first event (the request's head and usually its whole body, or the WebSocket
        # connect) travels inside the announcement: a GET costs two hops, not four.
        first = await receive()
        if first["type"] in ("http.disconnect", "websocket.disconnect"):
            return
        embedded, leftover = [first], []
        if len(first.get("body") or b"") > _EMBED_LIMIT:
            embedded, leftover = [], [first]
        conn = secrets.token_hex(8)
        reply = await layer.new_channel("bridge")
        try:
            await layer.send(
                BRIDGE_CHANNEL,
                {
                    "type": "bridge.open",
                    "conn": conn,
                    "reply": reply,
                    "scope": scope_to_wire(scope),
                    "events": embedded,
                    "resume": False,
                },
            )
            async with asyncio.timeout(self.attach_timeout):
                backlog: list[Message] = []
                while True:
                    items = _items(await layer.receive(reply))
                    kinds = [item.get("type") for item in items]
                    if "bridge.attached" in kinds:
                        at = kinds.index("bridge.attached")
                        inbound = str(items[at]["inbound"])
                        backlog = items[at + 1 :]
                        break
        except (TimeoutError, ChannelFull) as exc:
            reason = "no worker attached in time" if isinstance(exc, TimeoutError) else str(exc)
            logger.error("bridge: %s %r refused: %s", kind, scope.get("path"), reason)
            await self._refuse(kind, send)
            return
        await self._pump(kind, scope, inbound, reply, leftover, backlog, receive, send)

    async def _pump(
        self,
        kind: str,
        scope: dict[str, Any],
        inbound: str,
        reply: str,
        leftover: list[dict[str, Any]],
        backlog: list[Message],
        receive: Any,
        send: Any,
    ) -> None:
        layer = self.layer
        disconnect = "http.disconnect" if kind == "http" else "websocket.disconnect"
        response_started = False

        link = _Link(inbound)

        async def upstream() -> None:
            while True:
                event = leftover.pop(0) if leftover else await receive()
                async with link.lock:
                    for part in _chunks(event, "body") if kind == "http" else [event]:
                        if link.inbound is None:  # between two workers: hold it
                            if len(link.held) >= _MAX_HELD:
                                raise ChannelFull(
                                    f"{_MAX_HELD} events held while no worker was attached",
                                    channel=reply,
                                    capacity=_MAX_HELD,
                                )
                            link.held.append(part)
                        else:
                            await _send_patiently(
                                layer, link.inbound, {"type": "bridge.receive", "event": part}
                            )
                if event["type"] == disconnect:
                    return

        async def handle(item: Message) -> bool:
            """Act on one message from the worker; True when the connection is finished."""
            nonlocal response_started
            mtype = item.get("type")
            if mtype == "bridge.send":
                event = item["event"]
                response_started = True
                await send(event)
                # A complete HTTP response ends the exchange; no "done" needs to follow.
                return event.get("type") == "http.response.body" and not event.get("more_body")
            if mtype == "bridge.done":
                return True
            if mtype == "bridge.error":
                logger.error(
                    "bridge: the application failed for %s %r: %s",
                    kind,
                    scope.get("path"),
                    item.get("error"),
                )
                if kind == "http" and not response_started:
                    await _plain_response(send, 500, b"Internal Server Error\n")
                elif kind == "websocket":
                    await send({"type": "websocket.close", "code": 1011})
                return True
            if mtype == "bridge.detach":
                # The worker hands the connection over: hold new events, and tell it that
                # everything sent so far is in its channel (FIFO, so the ack comes last).
                async with link.lock:
                    old, link.inbound = link.inbound, None
                    if old is not None:
                        await layer.send(old, {"type": "bridge.detach_ack"})
            elif mtype == "bridge.attached":
                # The next worker took over: forward what was held, then carry on.
                async with link.lock:
                    link.inbound = str(item["inbound"])
                    held, link.held = link.held, []
                    for part in held:
                        await _send_patiently(
                            layer, link.inbound, {"type": "bridge.receive", "event": part}
                        )
            return False

        for item in backlog:
            if await handle(item):
                return
        forwarding = asyncio.create_task(upstream())
        receiving = asyncio.ensure_future(layer.receive(reply))
        client_left_at: float | None = None
        try:
            while True:
                waiting: set[asyncio.Future[Any]] = {receiving}
                timeout = None
                if client_left_at is None:
                    waiting.add(forwarding)
                else:
                    # The client is gone; the application gets a bounded time to finish.
                    timeout = max(0.0, client_left_at + _FULL_CHANNEL_PATIENCE - time.monotonic())
                done, _ = await asyncio.wait(
                    waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if forwarding in done and client_left_at is None:
                    client_left_at = time.monotonic()
                    error = forwarding.exception()
                    if error is not None:
                        logger.error(
                            "bridge: forwarding %s %r to the worker failed: %r",
                            kind,
                            scope.get("path"),
                            error,
                        )
                        if kind == "websocket":
                            code = 1013 if isinstance(error, ChannelFull) else 1011
                            await send({"type": "websocket.close", "code": code})
                        return
                if receiving not in done:
                    if client_left_at is not None and timeout is not None and not done:
                        logger.warning(
                            "bridge: no worker finished %s %r after the client left",
                            kind,
                            scope.get("path"),
                        )
                        return
                    continue
                message = receiving.result()
                receiving = asyncio.ensure_future(layer.receive(reply))
                for item in _items(message):
                    if await handle(item):
                        return
        finally:
            receiving.cancel()
            forwarding.cancel()
            await asyncio.gather(receiving, forwarding, return_exceptions=True)

    async def _refuse(self, kind: str, send: Any) -> None:
        if kind == "http":
            await _plain_response(send, 503, b"Service Unavailable: no worker available\n")
        else:  # the connect event was read: closing now refuses the handshake (403)
            await send({"type": "websocket.close", "code": 1013})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _plain_response(send: Any, status: int, body: bytes) -> None:
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


class _Attachment:
    """One connection served by this worker: its application instance and state."""

    __slots__ = ("conn", "idle", "kind", "message", "task")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.conn: str = message["conn"]
        self.kind: str = message["scope"].get("type", "")
        self.idle = False
        self.task: asyncio.Task[None] | None = None


class BridgeWorker:
    """The worker side of the decoupled mode: runs ``application`` for bridged connections.

    ``max_connections`` bounds the connections this worker serves at once; beyond it, it
    takes no new ``bridge.open`` until one ends, leaving them to other workers.
    """

    def __init__(
        self,
        application: Callable[..., Any],
        *,
        layer: BaseChannelLayer | None = None,
        max_connections: int = 1000,
        shutdown_timeout: float = 30.0,
    ) -> None:
        if not (isinstance(max_connections, int) and max_connections > 0):
            raise ConfigError(
                f"max_connections must be a positive integer, not {max_connections!r}"
            )
        self.application = application
        self.layer = layer
        self.max_connections = max_connections
        self.shutdown_timeout = shutdown_timeout
        self.served = 0
        self.resumed = 0  # connections taken over from a stopped worker
        self.handed_over = 0  # connections handed to the next worker at shutdown
        self._attachments: dict[str, _Attachment] = {}
        self._taking = 0  # receives waiting on the bridge channel
        self._room = asyncio.Event()
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()

    async def started(self) -> None:
        """Wait until :meth:`run` takes connections."""
        await self._started.wait()

    def stop(self) -> None:
        """Stop taking connections; hand WebSockets over, finish HTTP, then return."""
        self._stopping.set()

    async def run(self) -> None:
        """Serve bridged connections until :meth:`stop`."""
        if self.layer is None:
            self.layer = get_channel_layer()
        layer = self.layer
        taking = asyncio.create_task(self._take(layer))
        stopping = asyncio.create_task(self._stopping.wait())
        self._started.set()
        logger.info("bridge worker taking connections from %s", BRIDGE_CHANNEL)
        try:
            await asyncio.wait([taking, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            taking.cancel()
            stopping.cancel()
            results = await asyncio.gather(taking, stopping, return_exceptions=True)
        await self._shutdown(layer)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, (asyncio.CancelledError, LayerClosed)
            ):
                raise result

    async def _take(self, layer: BaseChannelLayer) -> None:
        # Several receivers at once, so a burst of new connections is taken in parallel
        # (a layer may hand several waiting receivers their messages in one round trip).
        takers = min(_TAKERS, self.max_connections)
        await asyncio.gather(*(self._take_one(layer) for _ in range(takers)))

    async def _take_one(self, layer: BaseChannelLayer) -> None:
        while True:
            while len(self._attachments) + self._taking >= self.max_connections:
                self._room.clear()
                await self._room.wait()
            self._taking += 1
            try:
                message = await layer.receive(BRIDGE_CHANNEL)
            finally:
                self._taking -= 1
            if message.get("type") != "bridge.open" or "conn" not in message:
                logger.error("bridge worker: ignored a malformed message: %r", message)
                continue
            attachment = _Attachment(message)
            self._attachments[attachment.conn] = attachment
            attachment.task = asyncio.create_task(
                self._serve(layer, attachment), name=f"kanal-bridge:{attachment.conn}"
            )

    async def _serve(self, layer: BaseChannelLayer, attachment: _Attachment) -> None:
        message = attachment.message
        reply: str = message["reply"]
        scope = scope_from_wire(message["scope"])
        resume = bool(message.get("resume")) and attachment.kind == "websocket"
        replay_connect = resume
        swallow_accept = resume
        # Events collected by the previous worker, replayed before this worker's own.
        pending: list[Message] = list(
            (message.get("pending") if resume else message.get("events")) or []
        )
        finished = False
        inbound = await layer.new_channel("bridgein")
        if resume:
            self.resumed += 1
        self.served += 1

        async def receive() -> Message:
            nonlocal replay_connect, finished
            if replay_connect:
                replay_connect = False
                return {"type": "websocket.connect"}
            if pending:
                event = pending.pop(0)
            else:
                if self._stopping.is_set() and attachment.kind == "websocket":
                    raise asyncio.CancelledError  # ready for more: hand the connection over now
                while True:
                    attachment.idle = True
                    try:
                        envelope = await layer.receive(inbound)
                    finally:
                        attachment.idle = False
                    if envelope.get("type") == "bridge.receive":
                        event = envelope["event"]
                        break
            if event.get("type") in ("http.disconnect", "websocket.disconnect"):
                finished = True
            return event

        outbox = _Outbox(layer, reply)
        response_complete = False

        async def send(event: Message) -> None:
            nonlocal swallow_accept, response_complete
            if swallow_accept and event.get("type") == "websocket.accept":
                swallow_accept = False  # the client was accepted by the first instance
                return
            for part in _chunks(dict(event), "body") if "body" in event else [dict(event)]:
                await outbox.put(
                    {"type": "bridge.send", "event": part}, len(part.get("body") or b"")
                )
            if event.get("type") == "http.response.body" and not event.get("more_body"):
                response_complete = True

        handed_over = False
        try:
            await outbox.put(
                {"type": "bridge.attached", "conn": attachment.conn, "inbound": inbound}
            )
            await self.application(scope, receive, send)
            await outbox.drain()
        except asyncio.CancelledError:
            if attachment.kind == "websocket" and not finished and self._stopping.is_set():
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # the cancellation is handled: the handover may await
                with contextlib.suppress(Exception):
                    await outbox.drain()  # what the instance sent goes before the detach
                handed_over = await self._hand_over(layer, attachment, inbound, pending)
            if not handed_over:
                raise
        except Exception as exc:
            logger.exception(
                "bridge worker: the application failed on %s %r",
                attachment.kind,
                scope.get("path"),
            )
            with contextlib.suppress(Exception):
                await outbox.drain()
            await layer.send(reply, {"type": "bridge.error", "error": repr(exc)})
            return
        finally:
            self._attachments.pop(attachment.conn, None)
            self._room.set()
        if not handed_over and not response_complete:
            await layer.send(reply, {"type": "bridge.done"})

    async def _hand_over(
        self,
        layer: BaseChannelLayer,
        attachment: _Attachment,
        inbound: str,
        pending: list[Message],
    ) -> bool:
        """Detach a cancelled WebSocket connection and announce it for the next worker."""
        reply = attachment.message["reply"]
        collected = list(pending)
        try:
            await layer.send(reply, {"type": "bridge.detach", "conn": attachment.conn})
            async with asyncio.timeout(_DETACH_TIMEOUT):
                while True:
                    envelope = await layer.receive(inbound)
                    if envelope.get("type") == "bridge.detach_ack":
                        break
                    if envelope.get("type") == "bridge.receive":
                        collected.append(envelope["event"])
            await layer.send(
                BRIDGE_CHANNEL, {**attachment.message, "resume": True, "pending": collected}
            )
        except TimeoutError:
            logger.warning(
                "bridge worker: the server of connection %s did not acknowledge the handover "
                "within %g s (it is probably gone)",
                attachment.conn,
                _DETACH_TIMEOUT,
            )
            return False
        except Exception as exc:
            logger.error(
                "bridge worker: could not hand over connection %s: %r", attachment.conn, exc
            )
            return False
        self.handed_over += 1
        return True

    async def _shutdown(self, layer: BaseChannelLayer) -> None:
        # WebSockets waiting for their next event are handed over at once; one handling an
        # event is handed over when it next asks for one; HTTP requests run to their end.
        # Whatever is still running after shutdown_timeout is cancelled.
        for attachment in list(self._attachments.values()):
            if attachment.task is not None and attachment.kind == "websocket" and attachment.idle:
                attachment.task.cancel()
        tasks = [a.task for a in self._attachments.values() if a.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.shutdown_timeout)
        leftover = [a.task for a in self._attachments.values() if a.task is not None]
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
