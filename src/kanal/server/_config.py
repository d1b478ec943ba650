"""The server's one typed configuration object, and the loaders that build it."""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kanal._logging import DEFAULT_LOG_LEVEL, LOG_LEVELS
from kanal.exceptions import AppLoadError, ConfigError
from kanal.protocols import HTTPLimits
from kanal.typing import ASGIApp

__all__ = ["Config", "import_string", "listen_address", "load_app"]


@dataclass(slots=True)
class Config:
    """Everything ``kanal serve`` can be told, with the defaults it uses.

    Build it directly (``Config(app=app, port=0)``), from a mapping (:meth:`from_mapping`,
    e.g. Django settings or a TOML table) or from parsed command-line arguments
    (:meth:`from_args`). ``app`` is an ASGI 3 callable or an import string
    ``"module:attr"`` (``"module:factory()"`` calls a factory).
    """

    app: ASGIApp | str
    host: str = "127.0.0.1"
    #: 0 asks the OS for a free port; read the bound one from ``Server.port``.
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    #: Process count. Each worker accepts on the same listening socket.
    workers: int = 1
    root_path: str = ""
    proxy_headers: bool = False
    #: Peers whose X-Forwarded-* headers are believed; "*" trusts everyone. Only loopback by
    #: default, the usual place of a reverse proxy on the same machine.
    forwarded_allow_ips: str = "127.0.0.1"
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_keyfile_password: str | None = None
    #: Connections served at once; more get 503. None: no limit.
    limit_concurrency: int | None = None
    #: Listen backlog; 2048 absorbs connection bursts (a benchmark opening 1,000 sockets).
    backlog: int = 2048
    #: Seconds an idle keep-alive connection is kept; 5 s like uvicorn and nginx's upstream
    #: default keepalive, long enough for a browser's next request.
    timeout_keep_alive: float = 5.0
    #: Seconds a client has to send a complete request head (slowloris protection).
    timeout_header_read: float = 10.0
    #: Seconds shutdown waits for responses and WebSockets to finish before cancelling.
    timeout_graceful_shutdown: float = 10.0
    #: Largest WebSocket message (fragments included); larger closes with 1009. 1 MiB is the
    #: websockets library's default, and matches the channel layer's message size limit.
    ws_max_size: int = 1024 * 1024
    #: Seconds between keepalive pings; None (or 0) disables pings. 20 s keeps NAT and proxy
    #: idle timers (often 60 s) from dropping quiet connections.
    ws_ping_interval: float | None = 20.0
    #: Seconds to wait for the pong before closing with 1011.
    ws_ping_timeout: float = 20.0
    #: Accept permessage-deflate when offered. Off: it costs ~32 KB more per idle connection.
    ws_per_message_deflate: bool = False
    #: Request-line, header and body limits (see :class:`kanal.protocols.HTTPLimits`).
    limits: HTTPLimits = field(default_factory=HTTPLimits)
    #: "auto" runs the lifespan protocol and tolerates apps that do not support it.
    lifespan: Literal["auto", "on", "off"] = "auto"
    #: "auto" uses uvloop when it is installed.
    loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    #: One log line per request. Off by default: formatting it costs ~15% of throughput.
    access_log: bool = False
    log_level: str = DEFAULT_LOG_LEVEL
    reload: bool = False
    reload_dirs: list[str] = field(default_factory=list)
    #: A file created once the server listens (and removed at exit), for process managers.
    ready_file: str | None = None
    # Budgets: what one connection may make the server hold (docs/server.md, "Limits"). Each
    # may be passed by one socket read (asyncio and uvloop read at most 256 KiB at a time),
    # since a read is handled whole before reading pauses.
    #: Bytes buffered towards a client that does not read, before the app's send() waits
    #: and a WebSocket's frames stop being read (they would only add pongs and close echoes).
    #: 64 KiB: asyncio's default high-water mark, enough to keep the socket busy without
    #: holding much memory.
    write_buffer_limit: int = 64 * 1024
    #: Request body bytes, or WebSocket message bytes, held for a slow app before the server
    #: stops reading the socket. 64 KiB, like the write side: a slow app costs no more than
    #: a slow client.
    read_buffer_limit: int = 64 * 1024
    #: WebSocket messages waiting for the app's receive() before reading pauses (it resumes
    #: at a quarter of it). 16: a burst of small messages is read in one go; a larger budget
    #: only queues more for an app that is already behind (uvicorn: 32).
    ws_max_queue: int = 16
    #: Bytes a WebSocket client may send before the app answered its handshake, held until
    #: the accept; past them reading pauses until the app answers. RFC 6455 §4.1 has the
    #: client wait for the 101, so a well-behaved one sends nothing; 64 KiB tolerates eager
    #: clients' first messages (uvicorn holds up to about 4 MB here).
    ws_max_pending_bytes: int = 64 * 1024

    #: Direct delivery (the ``kanal.groups`` extension, docs/direct.md): what builds the
    #: transport that brings broadcasts from the channel layer, as a callable or an import
    #: string. The default is the layer's own (``$KANAL_LAYER``, as the application's
    #: consumers use); None turns the extension off. Nothing is built until an application
    #: subscribes.
    direct_groups: Callable[..., Any] | str | None = "kanal.layers:DirectGroupTransport"
    #: Bytes buffered towards a WebSocket (unread by its client) past which a broadcast is
    #: not written to it. 256 KiB: four times ``write_buffer_limit``, several seconds of a
    #: busy room for a client whose network stalls briefly, while 1,000 stalled clients
    #: hold at most 256 MB.
    ws_direct_buffer_limit: int = 256 * 1024
    #: What happens to a connection over ``ws_direct_buffer_limit``: "close" (with 1013,
    #: "try again later": the client reconnects and catches up) or "drop" (the broadcast is
    #: skipped for it, so it misses messages but stays connected). Both are counted and logged.
    ws_direct_overflow: Literal["close", "drop"] = "close"

    # Observability (docs/operations.md).
    #: Count HTTP responses by status and time them (``ServerStats.http_statuses`` and
    #: ``http_latency``): two clock reads per request. On whenever ``metrics`` is set.
    request_metrics: bool = False
    #: ``"[host:]port"`` of a separate listener serving Prometheus ``/metrics`` for every
    #: worker process (the ``metrics`` extra, ``kanal.metrics``); None: no listener. The
    #: host defaults to 127.0.0.1.
    metrics: str | None = None
    #: Serve the live dashboard at ``/dashboard`` on the metrics listener.
    dashboard: bool = False
    #: Answer ``kanal inspect`` through the channel layer (``$KANAL_LAYER``, or the one a
    #: framework configured) when it is shared across processes (``kanal.inspect``): one
    #: idle channel per process. A server on ``memory://`` answers on its metrics listener.
    inspect: bool = True
    #: The token the dashboard asks for; None: ``$KANAL_DASHBOARD_TOKEN``, else a random one
    #: printed at start.
    dashboard_token: str | None = None

    def __post_init__(self) -> None:
        if not (callable(self.app) or isinstance(self.app, str)):
            raise ConfigError(f"app must be an ASGI callable or 'module:attr', not {self.app!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, not {self.port!r}")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, not {self.workers!r}")
        if self.limit_concurrency is not None and self.limit_concurrency < 1:
            raise ConfigError(f"limit_concurrency must be positive, not {self.limit_concurrency}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {LOG_LEVELS}, not {self.log_level!r}")
        if self.lifespan not in ("auto", "on", "off"):
            raise ConfigError(f"lifespan must be auto, on or off, not {self.lifespan!r}")
        if self.loop not in ("auto", "asyncio", "uvloop"):
            raise ConfigError(f"loop must be auto, asyncio or uvloop, not {self.loop!r}")
        if self.ws_direct_overflow not in ("close", "drop"):
            raise ConfigError(
                f"ws_direct_overflow must be close or drop, not {self.ws_direct_overflow!r}"
            )
        if not (
            self.direct_groups is None
            or isinstance(self.direct_groups, str)
            or callable(self.direct_groups)
        ):
            raise ConfigError(
                f"direct_groups must be a callable, an import string or None, "
                f"not {self.direct_groups!r}"
            )
        if self.metrics is not None:
            listen_address(self.metrics)  # a bad one fails here, not in a worker process
            self.request_metrics = True
        elif self.dashboard:
            raise ConfigError("the dashboard is served on the metrics listener: set metrics too")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("TLS needs both ssl_certfile and ssl_keyfile")
        if self.root_path.endswith("/"):
            self.root_path = self.root_path.rstrip("/")
        if self.ws_ping_interval is not None and self.ws_ping_interval <= 0:
            self.ws_ping_interval = None  # "--ws-ping-interval 0": no pings
        for name in (
            "timeout_keep_alive",
            "timeout_header_read",
            "timeout_graceful_shutdown",
            "ws_ping_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)!r}")
        for name in (
            "write_buffer_limit",
            "read_buffer_limit",
            "ws_max_queue",
            "ws_max_pending_bytes",
            "ws_direct_buffer_limit",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be a positive number, not {value!r}")

    @property
    def is_ssl(self) -> bool:
        """True when TLS is configured."""
        return self.ssl_certfile is not None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Config:
        """Build a config from a mapping of field names; unknown names raise ``ConfigError``.

        Limits may be given flat (``max_body_size=...``) or as ``limits={...}``.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        limit_names = {f.name for f in dataclasses.fields(HTTPLimits)}
        kwargs: dict[str, Any] = {}
        limits: dict[str, Any] = {}
        for key, value in mapping.items():
            key = key.replace("-", "_").lower()
            if key in limit_names:
                limits[key] = value
            elif key == "limits" and isinstance(value, Mapping):
                limits.update(value)
            elif key in names:
                kwargs[key] = value
            else:
                raise ConfigError(f"unknown server option {key!r}")
        if "app" not in kwargs:
            raise ConfigError("the server config needs 'app'")
        if limits:
            unknown = set(limits) - limit_names
            if unknown:
                raise ConfigError(f"unknown limit {sorted(unknown)[0]!r}")
            kwargs["limits"] = HTTPLimits(**limits)
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc

    @classmethod
    def from_args(cls, args: Any) -> Config:
        """Build a config from an ``argparse.Namespace`` made by ``kanal serve``'s parser."""
        values = {
            name: getattr(args, name)
            for name in (f.name for f in dataclasses.fields(cls))
            if getattr(args, name, None) is not None
        }
        limits = {
            f.name: getattr(args, f.name)
            for f in dataclasses.fields(HTTPLimits)
            if getattr(args, f.name, None) is not None
        }
        values.pop("limits", None)
        values.update(limits)
        return cls.from_mapping(values)


def listen_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"9100"``, ``"0.0.0.0:9100"`` or ``"[::1]:9100"`` as (host, port)."""
    host, colon, port_text = str(text).rpartition(":")
    host = host.strip("[]") if colon else default_host
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"expected [host:]port, not {text!r}") from None
    if not 0 <= port <= 65535 or not host:
        raise ConfigError(f"expected [host:]port with a port from 0 to 65535, not {text!r}")
    return host, port


def import_string(
    target: str, *, default_attr: str | None = None, app_dir: str | None = None
) -> object:
    """The object an import string names: ``"module:attr"``, ``"module:a.b"``, or
    ``"module:factory()"`` (the factory's result).

    ``default_attr`` is the attribute that ``"module"`` alone means (none: it is an error).
    The module is looked up from ``app_dir`` (default: the current directory) too, as
    ``python -m`` would, since a console script's ``sys.path`` does not hold it.
    """
    module_name, _, attr = target.partition(":")
    attr = attr or default_attr or ""
    if not module_name or not attr:
        raise AppLoadError(f"expected 'module:attr', got {target!r}")
    call = attr.endswith("()")
    if call:
        attr = attr[:-2]
    directory = app_dir if app_dir is not None else os.getcwd()
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppLoadError(f"cannot import module {module_name!r} of {target!r}") from exc
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if call:
        obj = obj()
    return obj


def load_app(target: ASGIApp | str, *, app_dir: str | None = None) -> ASGIApp:
    """Resolve ``"module:attr"`` (or ``"module:factory()"``) to the ASGI application."""
    if not isinstance(target, str):
        return target
    app = import_string(target, app_dir=app_dir)
    if not callable(app):
        raise AppLoadError(f"{target!r} is {app!r}, which is not an ASGI application")
    return app
