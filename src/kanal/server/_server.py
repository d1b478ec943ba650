"""The server: listening sockets, the shared timer, lifespan and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import ssl
from typing import Any

from kanal._signals import handling_signals
from kanal.exceptions import ConfigError
from kanal.server._config import Config, import_string, load_app
from kanal.server._direct import DirectGroups
from kanal.server._http import HTTPProtocol
from kanal.server._lifespan import Lifespan
from kanal.server._state import ServerState, ServerStats, describe_task, logger

__all__ = ["Server"]


def _remove_stale_socket(path: str) -> None:
    """Remove a unix socket left by a previous run (binding would fail on it)."""
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        if os.stat(path).st_mode & 0o170000 == 0o140000:  # S_IFSOCK
            os.unlink(path)


class Server:
    """An ASGI server for one process.

    ``await start()`` returns once it listens; ``await shutdown()`` drains it; ``serve()``
    does both around waiting for SIGTERM/SIGINT (or :meth:`request_shutdown`).
    ``sockets`` lets a parent process hand over already bound listening sockets.
    """

    def __init__(self, config: Config, *, sockets: list[socket.socket] | None = None) -> None:
        self.config = config
        self._given_sockets = sockets
        self._servers: list[asyncio.Server] = []
        self._state: ServerState | None = None
        self._lifespan: Lifespan | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._stop = asyncio.Event()
        #: Set once the server listens (after lifespan startup); for code that runs
        #: :meth:`serve` in a task and needs to know when to connect.
        self.started = asyncio.Event()
        self._started = False
        self._stopped = False
        #: Close code sent to WebSockets at shutdown: 1001 "going away", or 1012
        #: "service restart" when a reload or worker restart is behind it.
        self.close_code = 1001

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets (empty before :meth:`start`)."""
        found: list[socket.socket] = []
        for server in self._servers:
            found.extend(server.sockets)
        return found

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with ``port=0``); 0 for a unix socket."""
        for sock in self.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        return 0

    @property
    def state(self) -> ServerState:
        """The shared per-server state (connections, clock); only after :meth:`start`."""
        if self._state is None:
            raise RuntimeError("the server is not started")
        return self._state

    def stats(self) -> ServerStats:
        """A snapshot of what this server counted (how often each budget was reached)."""
        stats = self.state.stats
        latency = stats.http_latency
        copy = dataclasses.replace(
            stats,
            ws_close_codes=dict(stats.ws_close_codes),
            http_statuses=dict(stats.http_statuses),
        )
        if latency is not None:
            copy.http_latency = latency.copy()
        return copy

    def _ssl_context(self) -> ssl.SSLContext | None:
        config = self.config
        if not config.is_ssl:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        assert config.ssl_certfile is not None
        context.load_cert_chain(
            config.ssl_certfile, config.ssl_keyfile, config.ssl_keyfile_password
        )
        context.set_alpn_protocols(["http/1.1"])
        return context

    async def start(self) -> None:
        """Load the app, run lifespan startup, listen; return once connections are accepted."""
        if self._started:
            raise RuntimeError("the server was already started")
        self._started = True
        config = self.config
        loop = asyncio.get_running_loop()
        app = load_app(config.app)
        state = self._state = ServerState(config, app, loop)
        if config.direct_groups is not None:
            factory = config.direct_groups
            if isinstance(factory, str):
                found = import_string(factory)
                if not callable(found):
                    raise ConfigError(f"direct_groups {factory!r} is {found!r}, not a callable")
                factory = found
            state.direct = DirectGroups(factory, state.stats, loop)
        self._lifespan = Lifespan(app, config.lifespan, state.lifespan_state)
        await self._lifespan.startup()
        try:
            await self._listen(state)
        except BaseException:
            # Lifespan startup ran: give the app its shutdown even though we never listened.
            await self._lifespan.shutdown()
            raise
        self._schedule_tick()
        self._announce()
        self.started.set()

    async def _listen(self, state: ServerState) -> None:
        config = self.config
        loop = state.loop

        def factory() -> HTTPProtocol:
            return HTTPProtocol(state)

        try:
            context = self._ssl_context()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS certificate or key: {exc}") from exc
        backlog = config.backlog
        if self._given_sockets:
            for sock in self._given_sockets:
                if sock.family == socket.AF_UNIX:
                    server = await loop.create_unix_server(
                        factory, sock=sock, ssl=context, backlog=backlog
                    )
                else:
                    server = await loop.create_server(
                        factory, sock=sock, ssl=context, backlog=backlog
                    )
                self._servers.append(server)
        elif config.fd is not None:
            sock = socket.fromfd(config.fd, socket.AF_UNIX, socket.SOCK_STREAM)
            family = sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
            sock.close()
            sock = socket.fromfd(config.fd, family, socket.SOCK_STREAM)
            if family == socket.AF_UNIX:
                server = await loop.create_unix_server(
                    factory, sock=sock, ssl=context, backlog=backlog
                )
            else:
                server = await loop.create_server(factory, sock=sock, ssl=context, backlog=backlog)
            self._servers.append(server)
        elif config.uds is not None:
            _remove_stale_socket(config.uds)
            server = await loop.create_unix_server(
                factory, path=config.uds, ssl=context, backlog=backlog
            )
            self._servers.append(server)
        else:
            try:
                server = await loop.create_server(
                    factory, host=config.host, port=config.port, ssl=context, backlog=backlog
                )
            except OSError as exc:
                raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
            self._servers.append(server)

    def _announce(self) -> None:
        config = self.config
        if config.uds is not None:
            where = f"unix:{config.uds}"
        else:
            scheme = "https" if config.is_ssl else "http"
            names = []
            for sock in self.sockets:
                name = sock.getsockname()
                if isinstance(name, tuple):
                    host = f"[{name[0]}]" if ":" in name[0] else name[0]
                    names.append(f"{scheme}://{host}:{name[1]}")
                else:
                    names.append(f"unix:{name}")
            where = ", ".join(names)
        if config.ready_file:
            # Written before the log line so that either signal means both are true.
            with open(config.ready_file, "w", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {where}\n")
        logger.info("kanal server ready on %s (pid %d)", where, os.getpid())

    def _schedule_tick(self) -> None:
        state = self.state
        self._tick = state.loop.call_later(state.tick_interval, self._on_tick)

    def _on_tick(self) -> None:
        self.state.tick()
        self._schedule_tick()

    def request_shutdown(self) -> None:
        """Ask :meth:`serve` to shut down (what SIGTERM and SIGINT do)."""
        self._stop.set()

    async def serve(self, *, supervised: bool = False) -> None:
        """Start, wait for SIGTERM/SIGINT or :meth:`request_shutdown`, shut down.

        Alone, a second signal during the drain stops at once (a person pressing Ctrl-C
        twice). A ``supervised`` worker process keeps its handlers through the drain: a
        signal sent to the whole process group (systemd's default ``KillMode``) reaches it
        and then its supervisor's own SIGTERM follows, which must not cut requests in flight;
        the supervisor bounds the drain itself, killing a worker that overstays.
        """
        await self.start()
        try:
            with handling_signals(self._on_signal):
                await self._stop.wait()
                if supervised:
                    await self.shutdown()
        finally:
            await self.shutdown()

    def _on_signal(self, sig: signal.Signals) -> None:
        logger.info("received %s, shutting down (pid %d)", sig.name, os.getpid())
        self._stop.set()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, let responses finish and WebSockets close, then cancel the rest.

        Waits at most ``grace`` seconds (default: ``timeout_graceful_shutdown``) before cancelling
        the application tasks still running, logging for each where it was waiting.
        """
        if self._stopped or self._state is None:
            return
        self._stopped = True
        state = self._state
        state.draining = True
        limit = self.config.timeout_graceful_shutdown if grace is None else grace
        for server in self._servers:
            server.close()
        for connection in list(state.connections):
            connection.shutdown(self.close_code)
        deadline = state.loop.time() + limit
        while state.connections and state.loop.time() < deadline:
            tasks = [
                t for c in list(state.connections) if (found := c.app_task()) for t in (found[0],)
            ]
            if not tasks:
                # Only idle connections or closing handshakes remain.
                waiter = state.loop.create_future()
                handle = state.loop.call_later(
                    min(0.05, state.tick_interval), waiter.set_result, None
                )
                try:
                    await waiter
                finally:
                    handle.cancel()
            else:
                await asyncio.wait(tasks, timeout=max(0.0, deadline - state.loop.time()))
        leftovers = [found for c in list(state.connections) if (found := c.app_task())]
        for task, path in leftovers:
            logger.warning(
                "cancelled the application task for %s after %.1f s; it was waiting at %s",
                path,
                limit,
                describe_task(task),
            )
            task.cancel()
        if leftovers:
            await asyncio.wait([t for t, _ in leftovers], timeout=5.0)
        for connection in list(state.connections):
            transport: Any = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        state.connections.clear()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        if self._tick is not None:
            self._tick.cancel()
        if state.direct is not None:
            await state.direct.close()
        if self._lifespan is not None:
            await self._lifespan.shutdown()
        if self.config.ready_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.config.ready_file)
        if self.config.uds:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.config.uds)
        logger.info("kanal server stopped")
