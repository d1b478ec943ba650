"""The asyncio side of WebSocket: one protocol object and one app task per connection."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from websockets.exceptions import InvalidState

from kanal.exceptions import ASGIMessageError, ClientDisconnected
from kanal.protocols import (
    RequestStart,
    ResponseWriter,
    WebSocketClosed,
    WebSocketConnection,
    WebSocketMessage,
    error_response,
    handshake_problem,
)
from kanal.server._proxy import apply_proxy_headers
from kanal.server._state import ASGI_INFO, ServerState, access_logger, logger

__all__ = ["WebSocketProtocol"]

_CONNECT: dict[str, Any] = {"type": "websocket.connect"}
# Pause reading the socket when this many messages wait for the app, resume at the low mark:
# a slow app then slows the client down through TCP instead of growing a queue.
_QUEUE_HIGH = 16
_QUEUE_LOW = 4
# Seconds to wait for the client's close frame after ours before dropping the connection.
_CLOSE_TIMEOUT = 5.0
# While more received messages wait for the app (a client with several messages in flight),
# the app's replies are framed into one buffer and written together when it has answered
# them all or yields (one send system call per burst instead of one per message); a burst
# this large is written at once so that backpressure still reaches a sender that never
# yields. A lone reply is written at once: deferring it would only add a callback.
_FLUSH_AT = 64 * 1024

# Handshake phases.
_CONNECTING, _OPEN, _DENIED, _CLOSED = 0, 1, 2, 3


class WebSocketProtocol(asyncio.Protocol):
    """A WebSocket connection, from the upgrade request to the close."""

    __slots__ = (
        "_drain_waiter",
        "_flush_scheduled",
        "_pending",
        "_round",
        "_unflushed",
        "awaiting_pong",
        "client",
        "deadline",
        "denial",
        "lost",
        "phase",
        "queue",
        "reading_paused",
        "scope",
        "server",
        "state",
        "task",
        "transport",
        "waiter",
        "write_paused",
        "ws",
    )

    def __init__(
        self,
        state: ServerState,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        scheme: str,
    ) -> None:
        self.state = state
        self.client = client
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        config = state.config
        self.ws = WebSocketConnection(
            max_size=config.ws_max_size, compression=config.ws_per_message_deflate
        )
        self.phase = _CONNECTING
        self.queue: deque[dict[str, Any]] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.deadline: float | None = None
        self.awaiting_pong = False
        self.lost = False
        self.reading_paused = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._pending = b""
        self._flush_scheduled = False
        self._unflushed = 0
        self._round = -1
        self.denial: ResponseWriter | None = None
        self.scope: dict[str, Any] = {"scheme": "wss" if scheme == "https" else "ws"}

    def take_over(self, transport: asyncio.Transport, request: RequestStart, rest: bytes) -> None:
        """Continue on ``transport`` after the HTTP layer parsed the upgrade ``request``."""
        self.transport = transport
        transport.set_protocol(self)
        problem = handshake_problem(request.method, request.headers)
        if problem is not None:
            transport.write(error_response(400, f"Bad WebSocket handshake: {problem}"))
            transport.close()
            self.lost = True
            return
        state = self.state
        state.connections.add(self)
        self._pending = rest
        root_path = state.config.root_path
        subprotocols: list[str] = []
        for name, value in request.headers:
            if name == b"sec-websocket-protocol":
                subprotocols += [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
        scope = self.scope
        scope.update(
            type="websocket",
            asgi=ASGI_INFO,
            http_version=request.http_version,
            server=self.server,
            client=self.client,
            root_path=root_path,
            path=root_path + request.path,
            raw_path=request.raw_path,
            query_string=request.query_string,
            headers=request.headers,
            subprotocols=subprotocols,
            state=state.lifespan_state.copy(),
            extensions={"websocket.http.response": {}},
        )
        if state.config.proxy_headers:
            apply_proxy_headers(scope, state.config.forwarded_allow_ips)
        self.task = state.loop.create_task(self.run())

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self.phase != _OPEN:
            if self.phase == _CONNECTING:
                self._pending += data  # the client did not wait for our 101
            return
        events, out, eof = self.ws.receive_data(data)
        if out:
            self.transport.write(out)
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        received = len(queue)
        for event in events:
            if type(event) is WebSocketMessage:
                data_ = event.data
                # Queued here and woken once below, rather than push() per message.
                queue.append(
                    {"type": "websocket.receive", "text": data_}
                    if type(data_) is str
                    else {"type": "websocket.receive", "bytes": data_}
                )
            elif type(event) is WebSocketClosed:
                self.closed_with(event.code, event.reason)
            else:  # pong
                self.awaiting_pong = False
                interval = self.state.config.ws_ping_interval
                self.deadline = self.state.now + interval if interval else None
        if len(queue) > received:
            self.wake(queue)
        if eof:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.state.connections.discard(self)
        if self.phase != _CLOSED:
            self.closed_with(1006, "")
        for waiter in (self.waiter, self._drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def eof_received(self) -> bool | None:
        if self.phase == _OPEN:
            events, _, _ = self.ws.receive_eof()
            for event in events:
                if isinstance(event, WebSocketClosed):
                    self.closed_with(event.code, event.reason)
        return None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # Towards the app

    def push(self, message: dict[str, Any]) -> None:
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        queue.append(message)
        self.wake(queue)

    def wake(self, queue: deque[dict[str, Any]]) -> None:
        """Wake the app waiting in receive(); stop reading when too much waits for it."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if len(queue) >= _QUEUE_HIGH and not self.reading_paused and not self.lost:
            self.reading_paused = True
            self.transport.pause_reading()

    def closed_with(self, code: int, reason: str) -> None:
        if self.phase == _CLOSED:
            return
        was_open = self.phase == _OPEN
        self.phase = _CLOSED
        self.deadline = None
        if was_open or self.task is not None:
            self.push({"type": "websocket.disconnect", "code": code, "reason": reason})

    async def receive(self) -> dict[str, Any]:
        """The ``receive`` callable of the app."""
        while True:
            queue = self.queue
            if queue:
                message = queue.popleft()
                if self.reading_paused and len(queue) <= _QUEUE_LOW and not self.lost:
                    self.reading_paused = False
                    self.transport.resume_reading()
                if message["type"] == "websocket.disconnect":
                    queue.append(message)  # every later receive() sees it too
                return message
            if self.phase == _CLOSED:
                return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
            if self._unflushed:
                self.flush()  # the app is about to wait: what it sent goes out now
            waiter = self.waiter = self.state.loop.create_future()
            await waiter

    async def send(self, message: Any) -> None:
        """The ``send`` callable of the app."""
        kind = message["type"]
        phase = self.phase
        if kind == "websocket.send":
            if phase != _OPEN:
                if phase == _CONNECTING:
                    raise ASGIMessageError("websocket.send before websocket.accept")
                raise ClientDisconnected(f"WebSocket {self.scope['path']} is closed")
            text = message.get("text")
            data = text if text is not None else message.get("bytes")
            if data is None:
                raise ASGIMessageError("websocket.send needs 'text' or 'bytes'")
            state = self.state
            if not self.queue and not self._unflushed and self._round != state.write_round:
                # A lone reply: framed and written at once.
                try:
                    self.transport.write(self.ws.send_message(data))
                except InvalidState:  # closing: our close frame went out
                    raise ClientDisconnected(f"WebSocket {self.scope['path']} is closed") from None
                self._round = state.open_round()
            else:
                # More to come (a burst from the client being answered, or a second send
                # in this round of the loop): one write at the end of the round.
                if not self.ws.queue_message(data):
                    raise ClientDisconnected(f"WebSocket {self.scope['path']} is closed")
                unflushed = self._unflushed = self._unflushed + len(data) + 2
                if unflushed >= _FLUSH_AT:
                    self.flush()
                elif not self._flush_scheduled:
                    self._flush_scheduled = True
                    state.loop.call_soon(self.scheduled_flush)
            if self.write_paused:
                await self.drain()
        elif kind == "websocket.accept":
            if phase != _CONNECTING:
                raise ASGIMessageError(
                    f"websocket.accept in the wrong state for {self.scope['path']}"
                )
            self.accept(message)
        elif kind == "websocket.close":
            if phase == _CONNECTING:
                # Closing before accepting rejects the handshake (ASGI: HTTP 403).
                self.phase = _DENIED
                self.log_handshake(403)
                self.transport.write(error_response(403, "Forbidden"))
                self.transport.close()
            elif phase == _OPEN and self.ws.open:
                reason = message.get("reason") or ""
                out, eof = self.ws.send_close(message.get("code", 1000), reason)
                self.transport.write(out)
                if eof:
                    self.transport.close()
                else:
                    self.deadline = self.state.now + _CLOSE_TIMEOUT
                    self.awaiting_pong = False
            elif phase == _DENIED:
                raise ASGIMessageError("websocket.close after a denial response")
        elif kind == "websocket.http.response.start":
            if phase != _CONNECTING:
                raise ASGIMessageError("websocket.http.response.start after the handshake")
            writer = ResponseWriter(head_only=False, http11=True, keep_alive=False)
            # Raises for a bad status or header; the handshake is then still open, so an
            # app that lets the error escape gets its client a 500.
            writer.start(message["status"], message.get("headers", ()), self.state.date_header)
            self.phase = _DENIED
            self.denial = writer
            self.log_handshake(message["status"])
        elif kind == "websocket.http.response.body":
            denial = self.denial
            if denial is None:
                raise ASGIMessageError("websocket.http.response.body before its start")
            if not self.lost:
                self.transport.write(
                    denial.body(message.get("body", b""), message.get("more_body", False))
                )
                if denial.complete:
                    self.transport.close()
        else:
            raise ASGIMessageError(f"unexpected ASGI message type {kind!r} for a WebSocket")

    def log_handshake(self, status: int) -> None:
        """The access-log line of a WebSocket: how its handshake was answered."""
        if self.state.config.access_log:
            client = self.client
            query = self.scope["query_string"]
            access_logger.info(
                '%s:%s - "WEBSOCKET %s%s" %d',
                client[0] if client else "-",
                client[1] if client else "-",
                self.scope["path"],
                "?" + query.decode("latin-1") if query else "",
                status,
            )

    def accept(self, message: Any) -> None:
        if self.lost:
            raise ClientDisconnected(f"client left {self.scope['path']} before the accept")
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and subprotocol not in self.scope["subprotocols"]:
            raise ASGIMessageError(f"subprotocol {subprotocol!r} was not offered by the client")
        out, status = self.ws.accept(
            self.scope["path"], self.scope["headers"], subprotocol, message.get("headers", ())
        )
        self.transport.write(out)
        self.log_handshake(status)
        if status != 101:
            self.phase = _DENIED
            self.transport.close()
            return
        self.phase = _OPEN
        interval = self.state.config.ws_ping_interval
        self.deadline = self.state.now + interval if interval else None
        pending = self._pending
        if pending:
            self._pending = b""
            self.data_received(pending)

    def scheduled_flush(self) -> None:
        self._flush_scheduled = False
        if self._unflushed:
            self.flush()

    def flush(self) -> None:
        """Write the messages the app queued since the last flush."""
        self._unflushed = 0
        if self.lost:
            return
        out, eof = self.ws.output()
        if out:
            self.transport.write(out)
        if eof:
            self.transport.close()

    async def drain(self) -> None:
        if self.write_paused and not self.lost:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self.state.loop.create_future()
            await waiter

    async def run(self) -> None:
        """Run the app for this connection and clean up after it."""
        self.push(_CONNECT.copy())
        path = self.scope["path"]
        try:
            await self.state.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            logger.info("WebSocket %s: the app kept sending after the client left", path)
        except Exception as exc:
            logger.error("application error in WebSocket %s", path, exc_info=exc)
            self.end(500, 1011, "internal error")
        except asyncio.CancelledError:
            self.end(500, 1011, "server shutting down")
            raise
        else:
            if self.phase == _CONNECTING:
                self.end(403, 1000, "")
            elif self.phase == _DENIED and self.denial is not None and not self.denial.complete:
                logger.error("the app did not finish its denial response for %s", path)
            self.end(500, 1000, "")
        finally:
            self.task = None

    def end(self, status: int, code: int, reason: str) -> None:
        """Close after the app finished: HTTP ``status`` before accept, ``code`` after."""
        if self.lost:
            return
        if self.phase == _CONNECTING:
            self.phase = _DENIED
            self.log_handshake(status)
            self.transport.write(
                error_response(status, "Forbidden" if status == 403 else "Internal Server Error")
            )
            self.transport.close()
        elif self.phase == _OPEN and self.ws.open:
            out, _ = self.ws.send_close(code, reason)
            self.transport.write(out)
            self.deadline = self.state.now + _CLOSE_TIMEOUT
            self.awaiting_pong = False
        elif self.phase == _DENIED or self.ws.closed:
            self.transport.close()

    # Called by the server

    def on_deadline(self, now: float) -> None:
        if self.lost:
            return
        ws = self.ws
        if not ws.open or self.awaiting_pong:
            if ws.open:
                out, _ = ws.fail(1011, "keepalive ping timeout")
                self.transport.write(out)
                self.closed_with(1011, "keepalive ping timeout")
            self.deadline = None
            self.transport.close()
            return
        self.transport.write(ws.send_ping(b"kanal"))
        self.awaiting_pong = True
        self.deadline = now + self.state.config.ws_ping_timeout

    def shutdown(self, code: int) -> None:
        if self.lost:
            return
        if self.phase == _OPEN and self.ws.open:
            out, _ = self.ws.send_close(code, "server shutting down")
            self.transport.write(out)
            self.deadline = self.state.now + _CLOSE_TIMEOUT
            self.awaiting_pong = False
        elif self.phase != _OPEN:
            self.transport.close()

    def app_task(self) -> tuple[asyncio.Task[None], str] | None:
        task = self.task
        if task is not None and not task.done():
            return task, self.scope["path"]
        return None
