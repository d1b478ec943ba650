"""Running a server: logging, the event loop, worker processes and reloading."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any, Protocol, cast

from kanal._logging import configure_logging
from kanal._signals import handling_signals
from kanal.exceptions import ConfigError
from kanal.server._config import Config, import_string
from kanal.server._server import Server
from kanal.typing import ASGIApp

__all__ = ["bind_socket", "loop_factory", "run", "run_config"]

logger = logging.getLogger("kanal.server")
# How long a stopping supervisor waits for its workers before killing them: the workers'
# own graceful timeout plus a margin for lifespan shutdown.
_WORKER_STOP_MARGIN = 5.0
# A worker exiting this soon after its start failed to start; this many in a row and the
# supervisor stops restarting it (a broken import would otherwise respawn forever).
_QUICK_EXIT = 2.0
_MAX_QUICK_EXITS = 5


# What serves Config.metrics. The server cannot import kanal.metrics (it sits above the
# server, and needs an extra): it names it, as Config.direct_groups names the layer's side.
_METRICS_EXPORTER = "kanal.metrics:ServerExporter"
# What answers `kanal inspect` through the layer (Config.inspect), named for the same reason.
_INSPECT_RESPONDER = "kanal.inspect:attach_server"
#: Its signature: (server, process label) -> what stops it, or None if it did not start.
_Attach = Callable[[Server, str], Awaitable[Callable[[], Awaitable[None]] | None]]


class MetricsExporter(Protocol):
    """What the server needs of ``kanal.metrics.ServerExporter`` (see there)."""

    async def serve_process(self, server: Server) -> None:
        """Serve the metrics of this one process's ``server``, on its loop."""

    async def close(self) -> None:
        """Stop what :meth:`serve_process` started."""

    def answer(self, server: Server, pipe: Connection, index: int) -> None:
        """In a worker process: answer the supervisor's requests for snapshots on ``pipe``."""

    def pipe_for(self, index: int) -> Connection:
        """In the supervisor: a new pipe for the worker at ``index``; the worker's end."""

    def start_supervisor(self, workers: int) -> None:
        """In the supervisor: serve every worker's metrics, from a thread of its own."""

    def stop_supervisor(self) -> None:
        """In the supervisor: stop serving."""


def _metrics_exporter(config: Config) -> MetricsExporter:
    factory: Any = import_string(_METRICS_EXPORTER)
    exporter: MetricsExporter = factory(config)
    return exporter


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop constructor for ``--loop``: uvloop when installed and allowed."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ConfigError("loop 'uvloop' asked for, but uvloop is not installed") from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def bind_socket(config: Config) -> socket.socket:
    """Bind the listening socket in the parent so that every worker accepts on it."""
    if config.fd is not None:
        sock = socket.socket(fileno=config.fd)
    elif config.uds is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(config.uds)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(config.uds)
    else:
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((config.host, config.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
    sock.listen(config.backlog)
    sock.set_inheritable(True)
    return sock


def _serve_in_process(
    config: Config,
    sockets: list[socket.socket] | None,
    ready: Any = None,
    metrics: Connection | None = None,
    index: int = 0,
) -> None:
    configure_logging(config.log_level)
    server = Server(config, sockets=sockets)
    stop_answering: Callable[[], Awaitable[None]] | None = None
    # Alone, the process serves its metrics itself; a supervised one answers its
    # supervisor through ``metrics`` (a pipe), as worker process ``index``.
    exporter = _metrics_exporter(config) if config.metrics is not None else None

    async def when_started() -> None:
        nonlocal stop_answering
        await server.started.wait()
        if exporter is not None:
            try:
                if metrics is None:
                    await exporter.serve_process(server)
                else:
                    exporter.answer(server, metrics, index)
            except BaseException:
                server.request_shutdown()  # no server without the metrics it was asked for
                raise
        if config.inspect:
            attach = cast(_Attach, import_string(_INSPECT_RESPONDER))
            stop_answering = await attach(server, str(index))
        if ready is not None:
            ready.set()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # The supervisor learns through ``ready`` that this worker listens.
        starting = loop.create_task(when_started())
        try:
            # SIGHUP from a supervisor means "restart": close WebSockets with 1012.
            with handling_signals(lambda _: _restart(server), signals=[signal.SIGHUP]):
                await server.serve(supervised=ready is not None)
        finally:
            if not starting.done():
                starting.cancel()
            elif starting.exception() is not None:
                raise starting.exception()  # type: ignore[misc]
            if stop_answering is not None:
                await stop_answering()
            if exporter is not None and metrics is None:
                await exporter.close()

    with asyncio.Runner(loop_factory=loop_factory(config.loop)) as runner:
        runner.run(main())


def _restart(server: Server) -> None:
    server.close_code = 1012
    server.request_shutdown()


def _worker_main(
    config: Config,
    sockets: list[socket.socket],
    ready: Any,
    metrics: Connection | None = None,
    index: int = 0,
) -> None:
    """Entry point of a worker process (spawned, so it imports the app itself).

    ``ready`` is a ``multiprocessing.Event`` set once this worker listens; ``metrics`` the
    pipe to answer the supervisor's metrics listener on; ``index`` this worker's index
    (its label in metrics and ``kanal inspect``).
    """
    _serve_in_process(config, sockets, ready, metrics, index)


def run_config(config: Config) -> int:
    """Run the server described by ``config`` until a signal stops it; return an exit code."""
    configure_logging(config.log_level)
    if config.workers == 1 and not config.reload:
        _serve_in_process(config, None)
        return 0
    if not isinstance(config.app, str):
        raise ConfigError("--workers and --reload need the app as an import string 'module:attr'")
    return _Supervisor(config).run()


def run(app: ASGIApp | str, **options: Any) -> None:
    """Serve ``app`` until SIGTERM or SIGINT; ``options`` are :class:`Config` fields."""
    run_config(Config.from_mapping({"app": app, **options}))


class _Supervisor:
    """Keeps ``workers`` processes serving one listening socket; restarts any that die.

    A worker that dies within ``_QUICK_EXIT`` seconds of its start counts as failing at
    startup (an import error, a bad setting): after ``_MAX_QUICK_EXITS`` such exits in a
    row the supervisor gives up with exit code 1, or, with ``reload``, waits for the next
    code change. With ``reload`` every change to a Python file under the watched
    directories restarts all workers (using ``watchfiles``).
    """

    def __init__(self, config: Config) -> None:
        # The supervisor owns the ready file: it is written once every worker listens.
        self.ready_file = config.ready_file
        self.config = config = dataclasses.replace(config, ready_file=None)
        self.sock = bind_socket(config)
        self.ready_events: list[Any] = []
        self.announced = False
        self.processes: list[SpawnProcess | None] = []
        self.started_at: list[float] = []
        self.quick_exits = 0
        self.stopping = threading.Event()
        self.changed = threading.Event()
        self.context = multiprocessing.get_context("spawn")
        self.exporter = _metrics_exporter(config) if config.metrics is not None else None

    def spawn(self, index: int) -> None:
        ready = self.context.Event()
        self.ready_events[index] = ready
        pipe = self.exporter.pipe_for(index) if self.exporter is not None else None
        process = self.context.Process(
            target=_worker_main,
            args=(self.config, [self.sock], ready, pipe, index),
            daemon=False,
        )
        process.start()
        if pipe is not None:
            pipe.close()  # the worker's end, now the worker's
        logger.info("started worker process %d", process.pid)
        self.processes[index] = process
        self.started_at[index] = time.monotonic()

    def run(self) -> int:
        # Through the whole run, stop_all included: a second signal changes nothing, the
        # workers' own graceful timeout (plus a margin) bounds how long stopping takes.
        with handling_signals(lambda _: self.stopping.set()):
            return self._run()

    def _run(self) -> int:
        count = self.config.workers
        self.processes = [None] * count
        self.started_at = [0.0] * count
        self.ready_events = [None] * count
        if self.exporter is not None:
            self.exporter.start_supervisor(count)
        for index in range(count):
            self.spawn(index)
        if self.config.reload:
            threading.Thread(target=self.watch, daemon=True).start()
        code = 0
        try:
            while not self.stopping.wait(0.5):
                if self.changed.is_set():
                    self.changed.clear()
                    self.quick_exits = 0
                    self.restart_all()
                if not self.replace_dead():
                    code = 1
                    break
                if not self.announced and all(
                    e is not None and e.is_set() for e in self.ready_events
                ):
                    self.announce()
        finally:
            self.stop_all(signal.SIGTERM)
            if self.exporter is not None:
                self.exporter.stop_supervisor()
            self.sock.close()
            if self.ready_file and self.announced:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.ready_file)
            if self.config.uds:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.config.uds)
        return code

    def announce(self) -> None:
        """All workers listen: write the ready file and log it, once."""
        self.announced = True
        address = self.sock.getsockname()
        where = f"unix:{address}" if isinstance(address, str) else f"{address[0]}:{address[1]}"
        if self.ready_file:
            with open(self.ready_file, "w", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {where}\n")
        logger.info(
            "all %d workers ready on %s (supervisor pid %d)",
            len(self.processes),
            where,
            os.getpid(),
        )

    def replace_dead(self) -> bool:
        """Start replacements for dead workers; False when they keep failing at startup."""
        for index, process in enumerate(self.processes):
            if self.stopping.is_set():
                return True
            if process is not None and process.is_alive():
                continue
            if process is not None:
                lived = time.monotonic() - self.started_at[index]
                self.quick_exits = self.quick_exits + 1 if lived < _QUICK_EXIT else 0
                logger.warning(
                    "worker %d exited with code %s after %.1f s",
                    process.pid,
                    process.exitcode,
                    lived,
                )
                self.processes[index] = None
            if self.quick_exits >= _MAX_QUICK_EXITS:
                if not self.config.reload:
                    logger.error("workers keep failing at startup; stopping")
                    return False
                if process is not None:
                    logger.error("workers keep failing at startup; waiting for a code change")
                continue
            logger.info("starting a new worker")
            self.spawn(index)
        return True

    def restart_all(self) -> None:
        # SIGHUP tells a worker this is a restart (WebSockets close with 1012); the loop
        # starts replacements as the old ones exit.
        for process in self.processes:
            if process is not None and process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGHUP)

    def stop_all(self, sig: int) -> None:
        alive = [p for p in self.processes if p is not None]
        for process in alive:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, sig)
        limit = self.config.timeout_graceful_shutdown + _WORKER_STOP_MARGIN
        for process in alive:
            process.join(limit)
            if process.is_alive():
                logger.error("worker %d did not stop in %.0f s; killing it", process.pid, limit)
                process.kill()
                process.join()

    def watch(self) -> None:
        import watchfiles

        dirs = self.config.reload_dirs or [os.getcwd()]
        for changes in watchfiles.watch(
            *dirs,
            watch_filter=watchfiles.PythonFilter(),
            stop_event=self.stopping,
        ):
            names = sorted({os.path.basename(path) for _, path in changes})
            logger.info("changes in %s; restarting the workers", ", ".join(names))
            self.changed.set()


if sys.platform == "win32":  # pragma: no cover
    raise ImportError("kanal.server needs a POSIX system")
