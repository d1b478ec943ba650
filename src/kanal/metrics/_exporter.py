"""The metrics listener of ``kanal serve --metrics`` and ``kanal worker --metrics``.

The listener is a kanal :class:`~kanal.server.Server` of its own, on its own port, serving
:class:`~kanal.metrics.MetricsApp`. Where its numbers come from depends on the processes:

- **One process** (``kanal serve``, ``kanal worker``): the listener runs on the process's
  event loop and takes the snapshot there, at each scrape.
- **``--workers N``** (and ``--reload``): the supervisor runs the listener, in a thread with
  an event loop of its own, and each worker process answers it through a pipe: the
  supervisor writes a request (a sequence number), the worker's event loop, which watches
  the pipe, writes back its snapshot with the number. One scrape asks every worker at once
  and waits up to :data:`ANSWER_TIMEOUT` for them; a worker that does not answer (stuck, or
  being replaced) is left out of that scrape, which ``kanal_processes_reporting`` shows.

Why not ``prometheus_client``'s multiprocess mode: it keeps every metric in files that each
process writes as it counts, so the hot path would pay a file-backed update per event
instead of the integer additions it already makes; and a custom collector, which reads
those counters at scrape time, is not supported in that mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import secrets
import threading
import time
from multiprocessing.connection import Connection

from kanal.exceptions import ConfigError
from kanal.inspect._snapshot import ProcessSnapshot, take_snapshot
from kanal.metrics._app import MetricsApp, SnapshotSource
from kanal.server import Config, Server
from kanal.server._config import listen_address
from kanal.worker import Worker

__all__ = ["ANSWER_TIMEOUT", "ServerExporter", "resolve_token", "start_listener", "worker_source"]

logger = logging.getLogger("kanal.metrics")

#: Seconds a scrape waits for the worker processes' snapshots. Well under Prometheus'
#: default scrape timeout (10 s); a worker's event loop that is blocked this long is a
#: problem the missing process shows.
ANSWER_TIMEOUT = 1.0

#: The environment variable holding the dashboard's token.
TOKEN_ENV = "KANAL_DASHBOARD_TOKEN"


def resolve_token(given: str | None) -> tuple[str, bool]:
    """The dashboard's token: ``given``, else ``$KANAL_DASHBOARD_TOKEN``, else a new random
    one; and whether it was made here (then it is printed, being known to nobody else)."""
    token = given or os.environ.get(TOKEN_ENV)
    if token:
        return token, False
    return secrets.token_urlsafe(18), True


class _Listener(Server):
    """The metrics listener: a server that announces itself as what it is."""

    def __init__(self, config: Config, dashboard: tuple[str, bool] | None) -> None:
        super().__init__(config)
        self._dashboard = dashboard

    def _announce(self) -> None:
        base = f"http://{self.config.host}:{self.port}"
        logger.info("kanal metrics on %s/metrics (pid %d)", base, os.getpid())
        if self._dashboard is not None:
            token, made = self._dashboard
            shown = token if made else "<the token of --dashboard-token or $" + TOKEN_ENV + ">"
            logger.warning("kanal dashboard on %s/dashboard#token=%s", base, shown)


async def start_listener(
    source: SnapshotSource,
    address: str,
    *,
    expected: int = 1,
    dashboard: bool = False,
    dashboard_token: str | None = None,
    log_level: str = "info",
) -> Server:
    """Start the metrics listener on ``address`` (``[host:]port``) in the running loop."""
    host, port = listen_address(address)
    token = resolve_token(dashboard_token) if dashboard else None
    app = MetricsApp(source, expected=expected, dashboard_token=token[0] if token else None)
    config = Config(
        app=app,
        host=host,
        port=port,
        lifespan="off",
        direct_groups=None,
        ws_ping_interval=None,
        log_level=log_level,
    )
    server = _Listener(config, token)
    try:
        await server.start()
    except ConfigError as exc:
        raise ConfigError(f"the metrics listener: {exc}") from exc
    return server


class _Pipes:
    """The supervisor's ends of its workers' pipes, and one scrape's questions to them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pipes: dict[int, Connection] = {}
        self._seq = 0

    def replace(self, index: int, pipe: Connection) -> None:
        with self._lock:
            old = self._pipes.get(index)
            self._pipes[index] = pipe
            if old is not None:
                old.close()

    def close(self) -> None:
        with self._lock:
            for pipe in self._pipes.values():
                pipe.close()
            self._pipes.clear()

    def gather(self) -> list[ProcessSnapshot]:
        """Ask every worker, then collect the answers until :data:`ANSWER_TIMEOUT`."""
        with self._lock:  # a worker's pipe is not replaced during a scrape
            self._seq += 1
            seq = self._seq
            asked: list[Connection] = []
            for pipe in self._pipes.values():
                with contextlib.suppress(OSError):
                    pipe.send_bytes(seq.to_bytes(8, "big"))
                    asked.append(pipe)
            deadline = time.monotonic() + ANSWER_TIMEOUT
            found: list[ProcessSnapshot] = []
            for pipe in asked:
                while True:
                    left = deadline - time.monotonic()
                    try:
                        if left <= 0 or not pipe.poll(left):
                            break
                        answered, snapshot = pipe.recv()
                    except (EOFError, OSError):
                        break
                    if answered == seq:  # else a late answer to an earlier scrape
                        found.append(snapshot)
                        break
            return found


class ServerExporter:
    """``kanal serve --metrics``: what the server runs for its metrics listener.

    The server names it by an import string (it cannot import this package) and calls it
    through the small interface it defines (``kanal.server._run.MetricsExporter``).
    """

    def __init__(self, config: Config) -> None:
        assert config.metrics is not None
        self.config = config
        self.address = config.metrics
        self._listener: Server | None = None
        self._pipes = _Pipes()
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    async def _listen(self, source: SnapshotSource, expected: int) -> Server:
        config = self.config
        return await start_listener(
            source,
            self.address,
            expected=expected,
            dashboard=config.dashboard,
            dashboard_token=config.dashboard_token,
            log_level=config.log_level,
        )

    # One process

    async def serve_process(self, server: Server) -> None:
        """Start the listener on this loop, for this process's ``server``."""

        async def source() -> list[ProcessSnapshot]:
            return [take_snapshot("0", server=server)]

        self._listener = await self._listen(source, 1)

    async def close(self) -> None:
        """Stop the listener of :meth:`serve_process`."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.shutdown(grace=1.0)

    # A worker process of a supervisor

    def answer(self, server: Server, pipe: Connection, index: int) -> None:
        """Answer the supervisor's requests on ``pipe`` from this process's event loop."""
        loop = asyncio.get_running_loop()
        fd = pipe.fileno()
        process = str(index)

        def on_request() -> None:
            request: bytes | None = None
            try:
                while pipe.poll():
                    request = pipe.recv_bytes()
            except (EOFError, OSError):  # the supervisor is gone
                loop.remove_reader(fd)
                return
            if request is None:
                return
            snapshot = take_snapshot(process, server=server)
            try:
                pipe.send((int.from_bytes(request, "big"), snapshot))
            except OSError:
                loop.remove_reader(fd)

        loop.add_reader(fd, on_request)

    # The supervisor

    def pipe_for(self, index: int) -> Connection:
        """A new pipe for the worker process (re)started at ``index``: its end of it."""
        mine, theirs = multiprocessing.get_context("spawn").Pipe()
        self._pipes.replace(index, mine)
        return theirs

    def start_supervisor(self, workers: int) -> None:
        """Start the listener in a thread of its own; raise ``ConfigError`` if it cannot."""
        ready = threading.Event()
        failure: list[BaseException] = []

        async def source() -> list[ProcessSnapshot]:
            found = await asyncio.to_thread(self._pipes.gather)
            return sorted(found, key=lambda snap: int(snap.process))

        async def main() -> None:
            self._thread_loop = asyncio.get_running_loop()
            self._thread_stop = asyncio.Event()
            try:
                listener = await self._listen(source, workers)
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                await self._thread_stop.wait()
            finally:
                await listener.shutdown(grace=1.0)

        self._thread = threading.Thread(
            target=lambda: asyncio.run(main()), name="kanal-metrics", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            error = failure[0]
            if isinstance(error, ConfigError):
                raise error
            raise ConfigError(f"cannot start the metrics listener: {error!r}") from error

    def stop_supervisor(self) -> None:
        """Stop the listener thread and close the pipes."""
        loop, stop = self._thread_loop, self._thread_stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop ended already
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(5.0)
        self._pipes.close()


def worker_source(worker: object, process: str = "0", role: str = "worker") -> SnapshotSource:
    """The snapshot source of a ``kanal worker`` (a ``Worker`` or a ``BridgeWorker``), or of
    another command that serves the layer (``role``: "scheduler", "mqtt")."""
    counted = worker if isinstance(worker, Worker) else None

    async def source() -> list[ProcessSnapshot]:
        return [take_snapshot(process, role=role, worker=counted)]

    return source
