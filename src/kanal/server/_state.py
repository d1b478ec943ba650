"""State shared by every connection of one server: config, app, clock, registry."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, ClassVar, Protocol

from kanal._histogram import Histogram
from kanal._logging import logs_connections
from kanal.server._config import Config
from kanal.typing import ASGIApp

__all__ = ["Connection", "ServerState", "ServerStats", "describe_task"]

logger = logging.getLogger("kanal.server")
access_logger = logging.getLogger("kanal.server.access")

#: Shared by every scope; ASGI 3 with spec 2.4 (http.disconnect after response, etc.).
ASGI_INFO: dict[str, str] = {"version": "3.0", "spec_version": "2.4"}


@dataclass(slots=True)
class ServerStats:
    """What one server process counted since it started (:meth:`Server.stats` copies it).

    The first counts are budgets of the "Limits" section of the server's documentation
    being reached, so that a client holding the server back is seen, not only felt; the
    traffic counts after them are what ``kanal.metrics`` exports. Each costs one integer
    addition per connection, read or write; what needs a clock (request latency) is only
    kept with ``Config.request_metrics``.
    """

    #: A client stopped reading: the bytes buffered towards it passed
    #: ``write_buffer_limit`` (the app's ``send`` then waits).
    write_pauses: int = 0
    #: The app fell behind: reading paused while a request body (``read_buffer_limit``),
    #: pipelined requests, or WebSocket messages (``ws_max_queue``) waited for it.
    read_pauses_app: int = 0
    #: A WebSocket client did not read what was written to it (pongs, messages, the close
    #: echo): reading its frames paused until it reads.
    read_pauses_peer: int = 0
    #: A WebSocket client sent more than ``ws_max_pending_bytes`` before the handshake was
    #: answered: reading paused until the app answers.
    read_pauses_handshake: int = 0
    #: WebSocket connections closed with 1009 (a message over ``ws_max_size``).
    ws_messages_too_big: int = 0
    #: WebSocket connections closed with 1011 because no pong came in time; one whose
    #: client does not read is cut then, not left to hold its buffer.
    ws_ping_timeouts: int = 0
    #: Direct delivery: broadcasts this process received for groups it has subscribers in.
    direct_messages: int = 0
    #: Direct delivery: frames handed to subscribers (one per broadcast and subscriber).
    direct_frames: int = 0
    #: Direct delivery: connections closed with 1013 because more than
    #: ``ws_direct_buffer_limit`` bytes waited for them to read (``ws_direct_overflow="close"``).
    ws_direct_slow_closes: int = 0
    #: Direct delivery: frames skipped for a connection over ``ws_direct_buffer_limit``
    #: (``ws_direct_overflow="drop"``).
    ws_direct_drops: int = 0
    # Traffic.
    #: HTTP connections accepted (a WebSocket starts as one).
    http_connections: int = 0
    #: Connections answered 503 and closed at once: ``limit_concurrency`` was reached.
    refused_connections: int = 0
    #: HTTP requests whose response the application finished (or failed).
    http_requests: int = 0
    #: WebSocket handshakes the application accepted.
    ws_accepted: int = 0
    #: WebSocket handshakes refused: invalid, or denied by the application (403 or its own).
    ws_rejected: int = 0
    #: WebSocket messages received from clients and handed to the application.
    ws_messages_received: int = 0
    #: WebSocket messages the application sent (broadcasts are ``direct_frames``).
    ws_messages_sent: int = 0
    #: Bytes read from and written to WebSocket connections (frames, headers included).
    ws_bytes_received: int = 0
    ws_bytes_sent: int = 0
    #: How accepted WebSockets ended: close code -> connections (1006: the client vanished).
    ws_close_codes: dict[int, int] = field(default_factory=dict)
    #: With ``Config.request_metrics``: responses by status (0: none was started) and the
    #: seconds from the request head to the end of the response.
    http_statuses: dict[int, int] = field(default_factory=dict)
    http_latency: Histogram | None = None


class Connection(Protocol):
    """What the server's timer and shutdown need from a connection protocol."""

    #: "http" or "websocket", for the count of open connections by protocol.
    kind: ClassVar[str]
    deadline: float | None

    def on_deadline(self, now: float) -> None:
        """The connection's deadline passed: time it out or send a keepalive ping."""

    def shutdown(self, code: int) -> None:
        """Begin a graceful close (HTTP: after the current response; WebSocket: ``code``)."""

    def app_task(self) -> tuple[asyncio.Task[None], str] | None:
        """The application task still running for this connection, and its path."""


class ServerState:
    """What all connections of a server share.

    ``now`` is the loop time refreshed by one server-wide timer instead of a timer per
    connection: deadlines are stored as plain floats and checked on each tick, so setting
    or clearing a timeout costs an attribute write, not a timer handle.
    """

    __slots__ = (
        "_connections_made",
        "_round_open",
        "app",
        "config",
        "connection_prefix",
        "connections",
        "date_header",
        "direct",
        "draining",
        "lifespan_state",
        "log_connections",
        "loop",
        "now",
        "stats",
        "tick_interval",
        "write_round",
    )

    def __init__(self, config: Config, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.app = app
        self.loop = loop
        self.connections: set[Connection] = set()
        self.lifespan_state: dict[str, Any] = {}
        self.now = loop.time()
        self.date_header = b""
        self.draining = False
        self.write_round = 0
        self._round_open = False
        self.stats = ServerStats()
        # Connection ids (for logs) are this prefix and a count: random per process, so
        # that the lines of several processes and hosts never mix two connections up.
        self.connection_prefix = secrets.token_hex(3) + "-"
        self._connections_made = 0
        #: Set the connection's id for its application's lines (JSON logs only).
        self.log_connections = logs_connections()
        if config.request_metrics:
            self.stats.http_latency = Histogram()
        #: Direct delivery's subscriptions (``kanal.server._direct.DirectGroups``), None when
        #: ``Config.direct_groups`` is None; the server sets it at start.
        self.direct: Any = None
        self.refresh_date()
        timeouts = [config.timeout_keep_alive, config.timeout_header_read]
        if config.ws_ping_interval:
            timeouts += [config.ws_ping_interval, config.ws_ping_timeout]
        # A quarter of the shortest timeout keeps deadlines within 25%; never more than 1 s
        # (the Date header's resolution), never less than 20 ms.
        self.tick_interval = max(0.02, min(1.0, min(timeouts) / 4))

    def number_connection(self) -> int:
        """A number for a new connection: its id in logs is :meth:`connection_id` of it."""
        self._connections_made += 1
        return self._connections_made

    def connection_id(self, number: int) -> str:
        """The id the log lines about connection ``number`` carry (``"connection"``)."""
        return self.connection_prefix + str(number)

    def open_round(self) -> int:
        """The number of this turn of the event loop, as far as writes are concerned.

        A connection that already wrote in this round queues what it sends next and writes
        it all once, at the end of the round: a consumer handling a backlog in one go makes
        one system call, not one per message. One callback per round for the whole server.
        """
        if not self._round_open:
            self._round_open = True
            self.loop.call_soon(self._end_round)
        return self.write_round

    def _end_round(self) -> None:
        self._round_open = False
        self.write_round += 1

    def refresh_date(self) -> None:
        """Format the ``Date`` header line once per tick rather than once per response."""
        self.date_header = b"date: %s\r\n" % formatdate(usegmt=True).encode("ascii")

    def tick(self) -> None:
        """Advance the clock and fire the deadlines that passed."""
        now = self.now = self.loop.time()
        self.refresh_date()
        expired = [c for c in self.connections if c.deadline is not None and c.deadline <= now]
        for connection in expired:
            try:
                connection.on_deadline(now)
            except Exception:
                logger.exception("timeout handling failed for %r", connection)


def describe_task(task: asyncio.Task[Any]) -> str:
    """Where a task is waiting: the innermost frames of its ``await`` chain.

    ``Task.get_stack()`` shows only the outermost coroutine, which is the server's own
    wrapper; following ``cr_await`` reaches the application's line that is waiting.
    """
    coro: Any = task.get_coro()
    frames: list[str] = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            frames.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    if not frames:
        return "not started" if not task.done() else "finished"
    return " <- ".join(reversed(frames[-3:]))
