"""The asyncio side of HTTP/1.1: one protocol object per connection, one cycle per request."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, ClassVar, cast

from kanal._logging import CONNECTION
from kanal.exceptions import ASGIMessageError, ClientDisconnected
from kanal.protocols import (
    HTTPParser,
    ProtocolFailure,
    RequestBody,
    RequestEnd,
    RequestStart,
    ResponseWriter,
    error_response,
)
from kanal.server._flow import PAUSE_APP, FlowControl
from kanal.server._proxy import apply_proxy_headers
from kanal.server._state import ASGI_INFO, ServerState, access_logger, logger

__all__ = ["HTTPProtocol"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}


def _address(info: Any) -> tuple[str, int] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


class HTTPProtocol(asyncio.Protocol):
    """An HTTP/1.1 connection; hands itself over to WebSocket on a valid upgrade."""

    kind: ClassVar[str] = "http"

    __slots__ = (
        "active",
        "client",
        "closed",
        "deadline",
        "failure",
        "flow",
        "head_pending",
        "last",
        "number",
        "parser",
        "pipeline",
        "scheme",
        "server",
        "state",
        "transport",
    )

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.parser = HTTPParser(state.config.limits)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.active: _Cycle | None = None  # the request the app is answering
        self.last: _Cycle | None = None  # the request whose body is arriving
        self.pipeline: deque[_Cycle] | None = None  # requests waiting their turn
        self.deadline: float | None = None
        self.head_pending = False
        # A bad request that followed pipelined good ones; answered after them.
        self.failure: ProtocolFailure | None = None
        self.closed = False
        self.flow: FlowControl = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.scheme = "http"
        self.number = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        state = self.state
        config = state.config
        self.flow = FlowControl(transport, state.loop, state.stats, config.write_buffer_limit)
        limit = config.limit_concurrency
        if limit is not None and len(state.connections) >= limit:
            state.stats.refused_connections += 1
            transport.write(error_response(503, "Service Unavailable: too many connections"))
            transport.close()
            self.closed = True
            return
        state.stats.http_connections += 1
        state.connections.add(self)
        self.number = state.number_connection()
        self.client = _address(transport.get_extra_info("peername"))
        self.server = _address(transport.get_extra_info("sockname"))
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        self.deadline = state.now + config.timeout_header_read

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connections.discard(self)
        for cycle in (self.active, self.last):
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()
        self.pipeline = None
        self.flow.connection_lost()

    def eof_received(self) -> bool | None:
        # A FIN from the client ends the connection (returning None closes the transport):
        # the usual client half-closing is one that left, and the app learns it at once
        # through http.disconnect instead of at its next write.
        return None

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self.active is None and not self.head_pending:
            # Bytes of a new request head: from now on the head must complete in time.
            self.head_pending = True
            self.deadline = self.state.now + self.state.config.timeout_header_read
        for event in self.parser.receive_data(data):
            kind = type(event)
            if kind is RequestBody:
                last = self.last
                if last is not None:
                    last.body_received(event.data)  # type: ignore[union-attr]
            elif kind is RequestEnd:
                last = self.last
                if last is not None:
                    last.end_received()
            elif kind is RequestStart:
                self.request_started(event)  # type: ignore[arg-type]
            else:
                self.protocol_failure(event)  # type: ignore[arg-type]
                return

    # Requests

    def request_started(self, request: RequestStart) -> None:
        self.deadline = None
        self.head_pending = False
        state = self.state
        config = state.config
        if request.upgrade == b"websocket":
            from kanal.server._websocket import WebSocketProtocol

            ws = WebSocketProtocol(state, self.client, self.server, self.scheme, self.number)
            ws.take_over(self.transport, self.flow, request, self.parser.upgrade_data)
            self.state.connections.discard(self)
            self.closed = True
            return
        root_path = config.root_path
        scope = {
            "type": "http",
            "asgi": ASGI_INFO,
            "http_version": request.http_version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": request.method,
            "root_path": root_path,
            "path": root_path + request.path if root_path else request.path,
            "raw_path": request.raw_path,
            "query_string": request.query_string,
            "headers": request.headers,
            "state": state.lifespan_state.copy(),
        }
        if config.proxy_headers:
            apply_proxy_headers(scope, config.forwarded_allow_ips)
        cycle = _Cycle(self, scope, request)
        self.last = cycle
        if self.active is None:
            self.active = cycle
            cycle.start()
        else:
            if self.pipeline is None:
                self.pipeline = deque()
            self.pipeline.append(cycle)
            # Do not read further pipelined requests until the queued ones are answered.
            self.pause_reading()

    def protocol_failure(self, failure: ProtocolFailure) -> None:
        logger.info("rejected request from %s: %s %s", self.client, failure.status, failure.reason)
        active = self.active
        if active is None:
            self.transport.write(error_response(failure.status, failure.reason))
            self.close()
        elif self.last is active and active.more_body:
            # The failure is in the body of the request the app is handling (body too
            # large): the app sees a disconnect, the client a status if still possible.
            active.disconnected = True
            active.wake()
            if not active.writer.started:
                self.transport.write(error_response(failure.status, failure.reason))
            self.close()
        else:
            # A later pipelined request is bad: answer the earlier ones first, in order.
            self.failure = failure
            self.pause_reading()

    def cycle_done(self, cycle: _Cycle) -> None:
        """The app finished a request: start the next pipelined one or wait for one."""
        if self.closed:
            return
        if not cycle.writer.keep_alive or self.state.draining:
            self.close()
            return
        if cycle.more_body:
            # The app did not read the whole body; skip the rest of it as it arrives.
            cycle.discard = True
            cycle.body.clear()
        self.active = None
        pipeline = self.pipeline
        if pipeline:
            nxt = pipeline.popleft()
            self.active = nxt
            nxt.start()
        elif self.failure is not None:
            self.transport.write(error_response(self.failure.status, self.failure.reason))
            self.close()
            return
        else:
            self.deadline = self.state.now + self.state.config.timeout_keep_alive
        if not pipeline:
            self.resume_reading()

    def pause_reading(self) -> None:
        """Stop reading until the app has taken what waits (a body, pipelined requests)."""
        if not self.closed:
            self.flow.pause_reading(PAUSE_APP)

    def resume_reading(self) -> None:
        if not self.closed:
            self.flow.resume_reading(PAUSE_APP)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    # Called by the server

    def on_deadline(self, now: float) -> None:
        self.deadline = None
        if self.active is not None:
            return
        if self.head_pending:
            # The client started a request head and did not finish it in time (slowloris).
            logger.info(
                "rejected request from %s: 408 request head not complete in time", self.client
            )
            self.transport.write(error_response(408, "Request Timeout: headers too slow"))
        self.close()

    def shutdown(self, code: int) -> None:
        active = self.active
        if active is None:
            self.close()
        elif active.writer.pending_head or not active.writer.started:
            # Tell the client this connection ends with the response it is waiting for.
            active.writer.keep_alive = False
        # Otherwise cycle_done() closes once the response is complete (draining is set).

    def app_task(self) -> tuple[asyncio.Task[None], str] | None:
        cycle = self.active
        if cycle is not None and cycle.task is not None and not cycle.task.done():
            return cycle.task, cycle.scope["path"]
        return None


class _Cycle:
    """One request and its response: the ``receive`` and ``send`` the app is given."""

    __slots__ = (
        "body",
        "conn",
        "discard",
        "disconnected",
        "expect_continue",
        "more_body",
        "scope",
        "started",
        "status",
        "task",
        "waiter",
        "writer",
    )

    def __init__(self, conn: HTTPProtocol, scope: dict[str, Any], request: RequestStart) -> None:
        self.conn = conn
        self.scope = scope
        self.writer = ResponseWriter(
            head_only=request.method == "HEAD",
            http11=request.http_version == "1.1",
            keep_alive=request.keep_alive,
        )
        self.body: list[bytes] = []
        self.more_body = True
        self.disconnected = False
        self.discard = False
        self.expect_continue = request.expect_continue
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.status = 0
        self.started = 0.0

    def start(self) -> None:
        state = self.conn.state
        if state.stats.http_latency is not None:
            self.started = time.perf_counter()
        self.task = state.loop.create_task(self.run())

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def body_received(self, data: bytes) -> None:
        if self.discard:
            return
        self.body.append(data)
        if self.waiter is not None:
            self.wake()
        elif len(self.body) > 1 and sum(map(len, self.body)) > (
            self.conn.state.config.read_buffer_limit
        ):
            # The app reads slower than the client sends: stop reading the socket; TCP
            # flow control then slows the client down (receive() resumes reading).
            self.conn.pause_reading()

    def end_received(self) -> None:
        self.more_body = False
        if self.discard:
            self.conn.last = None
        self.wake()

    async def run(self) -> None:
        conn = self.conn
        scope = self.scope
        writer = self.writer
        if conn.state.log_connections:
            CONNECTION.set(conn.state.connection_id(conn.number))  # this task's context only
        try:
            await conn.state.app(scope, self.receive, self.send)
        except ClientDisconnected:
            logger.info(
                "%s %s: the app kept sending after the client left", scope["method"], scope["path"]
            )
        except Exception as exc:
            logger.error("application error in %s %s", scope["method"], scope["path"], exc_info=exc)
            self.fail_response()
        except asyncio.CancelledError:
            self.fail_response()
            raise
        else:
            if not writer.started:
                logger.error(
                    "the app returned without a response for %s %s", scope["method"], scope["path"]
                )
                self.fail_response()
            elif not writer.complete:
                logger.error(
                    "the app returned before finishing the response for %s %s",
                    scope["method"],
                    scope["path"],
                )
                conn.close()
        finally:
            stats = conn.state.stats
            stats.http_requests += 1
            latency = stats.http_latency
            if latency is not None:
                latency.observe(time.perf_counter() - self.started)
                statuses = stats.http_statuses
                statuses[self.status] = statuses.get(self.status, 0) + 1
            if conn.state.config.access_log:
                self.log_access()
            self.task = None
            if conn.last is self and not self.more_body:
                conn.last = None
            conn.cycle_done(self)

    def fail_response(self) -> None:
        conn = self.conn
        if conn.closed:
            return
        if not self.writer.started or self.writer.pending_head:
            self.status = 500
            conn.transport.write(error_response(500, "Internal Server Error"))
        conn.close()

    def log_access(self) -> None:
        scope = self.scope
        client = scope["client"]
        query = scope["query_string"]
        access_logger.info(
            '%s:%s - "%s %s%s HTTP/%s" %d',
            client[0] if client else "-",
            client[1] if client else "-",
            scope["method"],
            scope["path"],
            "?" + query.decode("latin-1") if query else "",
            scope["http_version"],
            self.status,
            extra={
                "connection": self.conn.state.connection_id(self.conn.number),
                "client": f"{client[0]}:{client[1]}" if client else None,
                "path": scope["path"],
                "status": self.status,
            },
        )

    async def receive(self) -> dict[str, Any]:
        if self.expect_continue:
            self.expect_continue = False
            if not self.writer.started and not self.conn.closed:
                # RFC 9110 §10.1.1: the client waits for this before sending the body; the
                # app asking for the body is the signal that it wants it.
                self.conn.transport.write(_CONTINUE)
        while True:
            body = self.body
            if body:
                data = body[0] if len(body) == 1 else b"".join(body)
                body.clear()
                more_body = self.more_body
                if more_body:
                    self.conn.resume_reading()
                else:
                    self.discard = True  # the body is complete: no second final message
                return {"type": "http.request", "body": data, "more_body": more_body}
            if self.writer.complete or self.disconnected:
                # ASGI: http.disconnect once the response was sent or the client left.
                return _DISCONNECT.copy()
            if not self.more_body:
                if not self.discard:
                    self.discard = True  # the final empty message is given once
                    return {"type": "http.request", "body": b"", "more_body": False}
            else:
                self.conn.resume_reading()
            waiter = self.waiter = self.conn.state.loop.create_future()
            await waiter

    async def send(self, message: Any) -> None:
        kind = message["type"]
        conn = self.conn
        if kind == "http.response.body":
            if conn.closed or self.disconnected:
                if self.writer.complete:
                    return
                raise ClientDisconnected(f"client left {self.scope['path']}")
            try:
                data = self.writer.body(message.get("body", b""), message.get("more_body", False))
            except ASGIMessageError:
                raise
            except (TypeError, AttributeError) as exc:
                raise ASGIMessageError(f"invalid http.response.body message: {exc}") from exc
            if data:
                conn.transport.write(data)
            if self.writer.complete:
                self.wake()
            elif conn.flow.write_paused:
                await conn.flow.drain()
        elif kind == "http.response.start":
            if conn.closed or self.disconnected:
                raise ClientDisconnected(f"client left {self.scope['path']}")
            self.status = message["status"]
            self.writer.start(
                message["status"], message.get("headers", ()), self.conn.state.date_header
            )
        else:
            raise ASGIMessageError(
                f"unexpected ASGI message type {kind!r} for an HTTP request to {self.scope['path']}"
            )
