"""The asyncio side of WebSocket: bytes in and out of one session, one app task per connection.

What a WebSocket means to its application (the handshake, which message is allowed when,
the events ``receive()`` gets) is :class:`kanal.protocols.WebSocketSession`'s; this module
feeds it the socket's bytes, writes what it produces, and adds what needs a loop: waking
the app, timers (keepalive pings, the closing handshake), and backpressure through the
connection's :class:`~kanal.server._flow.FlowControl`.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Final

from kanal._logging import CONNECTION
from kanal.exceptions import ASGIMessageError, ClientDisconnected
from kanal.protocols import (
    RequestStart,
    WebSocketAction,
    WebSocketSession,
    WebSocketState,
    error_response,
    handshake_problem,
)
from kanal.server._direct import DIRECT_EXTENSION
from kanal.server._flow import PAUSE_APP, PAUSE_HANDSHAKE, PAUSE_PEER, FlowControl
from kanal.server._proxy import apply_proxy_headers
from kanal.server._state import ASGI_INFO, ServerState, access_logger, logger
from kanal.typing import Message

__all__ = ["WebSocketProtocol"]

# Seconds to wait for the client's close frame after ours before dropping the connection.
_CLOSE_TIMEOUT = 5.0
# While more received messages wait for the app (a client with several messages in flight),
# the app's replies are framed into one buffer and written together when it has answered
# them all or yields (one send system call per burst instead of one per message); a burst
# this large is written at once so that backpressure still reaches a sender that never
# yields. A lone reply is written at once: deferring it would only add a callback.
_FLUSH_AT = 64 * 1024

_CONNECTING: Final = WebSocketState.CONNECTING
_OPEN: Final = WebSocketState.OPEN
_CLOSING: Final = WebSocketState.CLOSING
_DENYING: Final = WebSocketState.DENYING
_SEND: Final = WebSocketAction.SEND
_SUBSCRIBE: Final = WebSocketAction.SUBSCRIBE
_UNSUBSCRIBE: Final = WebSocketAction.UNSUBSCRIBE
# The close code of a connection that does not read its broadcasts (ws_direct_overflow
# "close"): 1013 "Try Again Later" (RFC 6455 §7.4.1, IANA registry), since reconnecting is
# what the client should do; the reason says why.
_SLOW_CODE: Final = 1013
_SLOW_REASON: Final = "too slow to read broadcasts"


class WebSocketProtocol(asyncio.Protocol):
    """A WebSocket connection, from the upgrade request to the close."""

    kind: ClassVar[str] = "websocket"

    __slots__ = (
        "_drops",
        "_flush_scheduled",
        "_round",
        "_unflushed",
        "client",
        "deadline",
        "direct_groups",
        "flow",
        "lost",
        "number",
        "queue_high",
        "queue_low",
        "scope",
        "server",
        "session",
        "state",
        "task",
        "transport",
        "waiter",
    )

    def __init__(
        self,
        state: ServerState,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        scheme: str,
        number: int = 0,
    ) -> None:
        self.state = state
        #: The connection's number (its id in logs: ``state.connection_id(number)``).
        self.number = number
        self.client = client
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.flow: FlowControl = None  # type: ignore[assignment]
        self.session: WebSocketSession = None  # type: ignore[assignment]
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.deadline: float | None = None
        self.lost = False
        self._flush_scheduled = False
        self._unflushed = 0
        self._round = -1
        #: The groups this connection is subscribed to for direct delivery, if any.
        self.direct_groups: set[str] | None = None
        self._drops = 0
        config = state.config
        # Reading pauses at the high mark of messages (or read_buffer_limit bytes) waiting
        # for the app and resumes at a quarter of both: a slow app then slows the client
        # down through TCP instead of growing a queue.
        self.queue_high = config.ws_max_queue
        self.queue_low = max(1, config.ws_max_queue // 4)
        self.scope: dict[str, Any] = {"scheme": "wss" if scheme == "https" else "ws"}

    def take_over(
        self, transport: asyncio.Transport, flow: FlowControl, request: RequestStart, rest: bytes
    ) -> None:
        """Continue on ``transport`` after the HTTP layer parsed the upgrade ``request``."""
        self.transport = transport
        self.flow = flow
        transport.set_protocol(self)
        flow.resume_reading(PAUSE_APP)  # whatever held the HTTP connection back is over
        problem = handshake_problem(request.method, request.headers)
        if problem is not None:
            self.state.stats.ws_rejected += 1
            transport.write(error_response(400, f"Bad WebSocket handshake: {problem}"))
            transport.close()
            self.lost = True
            return
        state = self.state
        config = state.config
        session = self.session = WebSocketSession(
            request, max_size=config.ws_max_size, compression=config.ws_per_message_deflate
        )
        state.connections.add(self)
        root_path = config.root_path
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
            subprotocols=session.subprotocols,
            state=state.lifespan_state.copy(),
            extensions=(
                {"websocket.http.response": {}, DIRECT_EXTENSION: {}}
                if state.direct is not None
                else {"websocket.http.response": {}}
            ),
        )
        if config.proxy_headers:
            apply_proxy_headers(scope, config.forwarded_allow_ips)
        self.task = state.loop.create_task(self.run())
        if rest:
            self.data_received(rest)  # the client did not wait for our 101

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        session = self.session
        state = self.state
        stats = state.stats
        stats.ws_bytes_received += len(data)
        before = session.state
        if before is _CONNECTING:
            session.receive_data(data)
            if session.pending_bytes > state.config.ws_max_pending_bytes:
                self.hold_before_accept()
            return
        waiting_pong = session.awaiting_pong
        messages = session.receive_data(data)
        if session.answered:  # pongs, the echo of a close (most data needs no answer)
            self.write_out()
        if waiting_pong and not session.awaiting_pong:
            interval = state.config.ws_ping_interval
            self.deadline = state.now + interval if interval else None
        if messages:
            stats.ws_messages_received += messages
            self.wake()
        if session.state is not before:  # the client's close, or a failure
            if session.failure == 1009:
                stats.ws_messages_too_big += 1
            if not messages:
                self.wake()  # for the websocket.disconnect

    def hold_before_accept(self) -> None:
        """Too much arrived before the app answered the handshake: stop reading till then."""
        if self.flow.pause_reading(PAUSE_HANDSHAKE):
            logger.info(
                "WebSocket %s from %s: %d bytes before the handshake was answered; reading "
                "paused until the app answers (ws_max_pending_bytes=%d)",
                self.scope["path"],
                self.client,
                self.session.pending_bytes,
                self.state.config.ws_max_pending_bytes,
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.state.connections.discard(self)
        if self.direct_groups:
            self.state.direct.forget(self)
        self.flow.connection_lost()
        session = self.session
        if session is not None:
            session.connection_lost()
            code = session.close_code
            if code is not None:
                codes = self.state.stats.ws_close_codes
                codes[code] = codes.get(code, 0) + 1
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool | None:
        session = self.session
        if session is not None:
            queued = len(session.events)
            session.receive_eof()
            if len(session.events) > queued:
                self.wake()
        return None

    def pause_writing(self) -> None:
        # The client does not read what we write: its frames would only make more to write
        # (a pong per ping, the echo of a close), so they wait in its own socket buffer.
        self.flow.pause_writing()
        self.flow.pause_reading(PAUSE_PEER)

    def resume_writing(self) -> None:
        self.flow.resume_writing()
        self.flow.resume_reading(PAUSE_PEER)

    # Towards the app

    def wake(self) -> None:
        """Wake the app waiting in receive(); stop reading when too much waits for it."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)
        session = self.session
        if (
            len(session.events) >= self.queue_high
            or session.queued_bytes > self.state.config.read_buffer_limit
        ):
            self.flow.pause_reading(PAUSE_APP)

    async def receive(self) -> Message:
        """The ``receive`` callable of the app."""
        session = self.session
        while True:
            if session.events:
                message = session.next_event()
                assert message is not None
                flow = self.flow
                if (
                    flow.paused & PAUSE_APP
                    and len(session.events) <= self.queue_low
                    and session.queued_bytes <= self.state.config.read_buffer_limit // 4
                ):
                    flow.resume_reading(PAUSE_APP)
                return message
            if self._unflushed:
                self.write_out()  # the app is about to wait: what it sent goes out now
            waiter = self.waiter = self.state.loop.create_future()
            await waiter

    async def send(self, message: Message) -> None:
        """The ``send`` callable of the app."""
        session = self.session
        state = self.state
        action = session.send(message, state.date_header)
        if action is _SEND:
            state.stats.ws_messages_sent += 1
            if not session.events and not self._unflushed and self._round != state.write_round:
                # A lone reply: written at once.
                self.write_out()
                self._round = state.open_round()
            else:
                # More to come (a burst from the client being answered, or a second send
                # in this round of the loop): one write at the end of the round.
                text = message.get("text")
                size = len(text) if text is not None else len(message["bytes"])
                unflushed = self._unflushed = self._unflushed + size + 2
                if unflushed >= _FLUSH_AT:
                    self.write_out()
                elif not self._flush_scheduled:
                    self._flush_scheduled = True
                    state.loop.call_soon(self.scheduled_flush)
            if self.flow.write_paused:
                await self.flow.drain()
            return
        if action is WebSocketAction.ACCEPT:
            state.stats.ws_accepted += 1
            self.log_handshake(session.status or 0)
            self.write_out()
            if session.state is _OPEN:
                interval = state.config.ws_ping_interval
                self.deadline = state.now + interval if interval else None
                self.flow.resume_reading(PAUSE_HANDSHAKE)
                if session.events:
                    # The messages the client sent before the accept (rare: counted here).
                    state.stats.ws_messages_received += sum(
                        1 for event in session.events if event["type"] == "websocket.receive"
                    )
                    self.wake()
        elif action is WebSocketAction.CLOSE:
            self.write_out()
            self.deadline = state.now + _CLOSE_TIMEOUT
        elif action is _SUBSCRIBE or action is _UNSUBSCRIBE:
            direct = state.direct
            if direct is None:
                raise ASGIMessageError(
                    f"{message['type']}: this server does not offer {DIRECT_EXTENSION!r} "
                    "(Config.direct_groups is None)"
                )
            if action is _SUBSCRIBE:
                await direct.subscribe(self, message["group"], message.get("since"))
                if self.lost:  # gone while the layer answered: it must not stay subscribed
                    direct.forget(self)
            else:
                await direct.unsubscribe(self, message["group"])
        else:
            if action is WebSocketAction.REJECT or action is WebSocketAction.START_DENIAL:
                state.stats.ws_rejected += 1
                self.log_handshake(session.status or 0)
            self.write_out()

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
                extra={
                    "connection": self.state.connection_id(self.number),
                    "client": f"{client[0]}:{client[1]}" if client else None,
                    "path": self.scope["path"],
                    "status": status,
                },
            )

    # Writing

    def write_out(self) -> None:
        """Write what the session produced, in order; close the transport if it says so."""
        self._unflushed = 0
        out, close = self.session.data_to_send()
        if self.lost:
            return
        transport = self.transport
        if out:
            self.state.stats.ws_bytes_sent += len(out)
            transport.write(out)
        if close and not transport.is_closing():
            transport.close()

    # Direct delivery (kanal.server._direct)

    def write_direct(self, frame: bytes) -> None:
        """Write a broadcast framed once for every subscriber, unless this one is too far behind.

        What the application sent before is written first, so a connection sees its own
        sends and the broadcasts in the order they happened.
        """
        if self.session.state is not _OPEN or self.lost:
            # Not accepted yet, or closing: frames may not follow a close (§5.5.1). The hub
            # counted the bytes as sent (once per broadcast, not per subscriber): uncounted.
            self.state.stats.ws_bytes_sent -= len(frame)
            return
        if self._unflushed:
            self.write_out()
        transport = self.transport
        limit = self.state.config.ws_direct_buffer_limit
        if transport.get_write_buffer_size() + len(frame) > limit:
            self.state.stats.ws_bytes_sent -= len(frame)
            self.overflow(limit)
            return
        transport.write(frame)

    def overflow(self, limit: int) -> None:
        """A broadcast would pass ``ws_direct_buffer_limit``: close or skip, as configured."""
        state = self.state
        if state.config.ws_direct_overflow == "drop":
            state.stats.ws_direct_drops += 1
            self._drops += 1
            if self._drops == 1 or self._drops % 1000 == 0:  # a log line, not a flood
                logger.warning(
                    "WebSocket %s from %s does not read its broadcasts: %d skipped so far "
                    "(more than ws_direct_buffer_limit=%d bytes unread)",
                    self.scope["path"],
                    self.client,
                    self._drops,
                    limit,
                )
            return
        state.stats.ws_direct_slow_closes += 1
        logger.warning(
            "WebSocket %s from %s closed with %d: more than ws_direct_buffer_limit=%d bytes "
            "of broadcasts unread",
            self.scope["path"],
            self.client,
            _SLOW_CODE,
            limit,
        )
        self.session.fail(_SLOW_CODE, _SLOW_REASON)
        self.write_out()
        # The client may never read the close frame: on_deadline cuts the connection then.
        self.deadline = state.now + _CLOSE_TIMEOUT
        self.wake()
        # Not now: the hub is iterating the group's subscribers.
        state.loop.call_soon(state.direct.forget, self)

    def close_direct(self, code: int, reason: str) -> None:
        """A close broadcast: start the closing handshake as the application's close would."""
        if self.lost:
            return
        if self.session.close(code, reason):
            self.write_out()
            self.deadline = self.state.now + _CLOSE_TIMEOUT

    def scheduled_flush(self) -> None:
        self._flush_scheduled = False
        if self._unflushed:
            self.write_out()

    async def run(self) -> None:
        """Run the app for this connection and clean up after it."""
        path = self.scope["path"]
        if self.state.log_connections:
            CONNECTION.set(self.state.connection_id(self.number))  # this task's context only
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
            if self.session.state is _DENYING:
                logger.error("the app did not finish its denial response for %s", path)
            self.end(403 if self.session.state is _CONNECTING else 500, 1000, "")
        finally:
            self.task = None

    def end(self, status: int, code: int, reason: str) -> None:
        """Close after the app finished: HTTP ``status`` before accept, ``code`` after."""
        if self.lost:
            return
        action = self.session.finish(status, code, reason)
        if action is WebSocketAction.REJECT:
            self.state.stats.ws_rejected += 1
            self.log_handshake(status)
        elif action is WebSocketAction.CLOSE:
            self.deadline = self.state.now + _CLOSE_TIMEOUT
        self.write_out()

    # Called by the server

    def on_deadline(self, now: float) -> None:
        if self.lost:
            return
        session = self.session
        if session.state is _OPEN and not session.awaiting_pong:
            session.ping()
            self.write_out()
            self.deadline = now + self.state.config.ws_ping_timeout
            return
        if session.state is _OPEN:  # the pong did not come in time
            self.state.stats.ws_ping_timeouts += 1
            session.fail(1011, "keepalive ping timeout")
            self.write_out()
            self.wake()
        # Else the closing handshake did not finish in time. Either way the client is gone
        # or does not read: if what we wrote is still buffered, a graceful close would wait
        # for it to read forever, so the connection is cut instead.
        self.deadline = None
        transport = self.transport
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def shutdown(self, code: int) -> None:
        if self.lost:
            return
        session = self.session
        if session.close(code, "server shutting down"):
            self.write_out()
            self.deadline = self.state.now + _CLOSE_TIMEOUT
        elif session.state is not _CLOSING:
            self.transport.close()

    def app_task(self) -> tuple[asyncio.Task[None], str] | None:
        task = self.task
        if task is not None and not task.done():
            return task, self.scope["path"]
        return None
