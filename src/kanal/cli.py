"""The ``kanal`` command: ``kanal serve``, ``kanal worker``, ``kanal scheduler``, ``kanal mqtt``.

Each subcommand registers itself with a function ``add_<name>_command(subparsers)`` that
sets ``handler`` on its parser; :func:`main` parses and calls it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from kanal import __version__
from kanal._logging import (
    DEFAULT_LOG_LEVEL,
    LOG_FORMAT_ENV,
    LOG_FORMATS,
    LOG_LEVELS,
    configure_logging,
)
from kanal.exceptions import ConfigError, KanalError

if TYPE_CHECKING:  # the commands import what they run when they run it
    from kanal.layers import BaseChannelLayer
    from kanal.worker._lifecycle import Stoppable

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _add_log_level(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument("--log-level", default=default, choices=LOG_LEVELS)
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text lines (default), or one JSON object per line for log collectors",
    )


def _add_layer_options(parser: argparse.ArgumentParser) -> None:
    """The options of a command that serves the channel layer (worker, scheduler)."""
    parser.add_argument(
        "--layer",
        help="channel layer URL (default: $KANAL_LAYER, else ipc:// for this project)",
    )
    _add_log_level(parser, DEFAULT_LOG_LEVEL)
    _add_inspect_option(parser)


# Observability: --metrics and the dashboard (kanal serve, kanal worker); docs/operations.md.


def _add_inspect_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-inspect",
        dest="inspect",
        action="store_false",
        default=None,
        help="do not answer `kanal inspect` through the channel layer",
    )


def _add_metrics_options(parser: argparse.ArgumentParser, *, dashboard: bool) -> None:
    add = parser.add_argument
    add(
        "--metrics",
        metavar="[HOST:]PORT",
        help="serve Prometheus /metrics on this separate listener (host 127.0.0.1 unless "
        "given; needs the metrics extra)",
    )
    if dashboard:
        add(
            "--dashboard",
            action="store_true",
            default=None,
            help="serve a live dashboard at /dashboard on the --metrics listener",
        )
        add(
            "--dashboard-token",
            help="the token the dashboard asks for (default: $KANAL_DASHBOARD_TOKEN, else a "
            "random one, printed at start)",
        )


def _export_layer(url: str | None) -> None:
    """Make ``url`` (if any) the process's default layer, before the application is loaded.

    Application code finds its layer with ``get_channel_layer()`` (consumers, services'
    replies, ``call()``), which reads ``$KANAL_LAYER``, in this process and in those it
    starts; without this, a worker started with ``--layer`` would receive on that layer and
    answer on ``memory://``.
    """
    if url:
        os.environ["KANAL_LAYER"] = url


def default_shared_layer_url() -> str:
    """The ``ipc://`` layer that processes started in this directory share by default.

    Named after the current directory (the project's), so that a server's worker
    processes and the ``kanal worker`` and ``kanal scheduler`` processes started next to
    it meet, and another project on the same host stays apart.
    """
    import hashlib

    digest = hashlib.sha256(os.fsencode(os.getcwd())).hexdigest()[:12]
    return f"ipc://kanal-{digest}"


def _shared_layer(what: str, url: str | None) -> str | None:
    """Make sure the processes of ``what`` share one channel layer; export its URL.

    ``url`` is the one given on the command line. With none, and no layer configured
    (``$KANAL_LAYER``, a framework's such as Django's ``CHANNEL_LAYERS``), the default is
    :func:`default_shared_layer_url` instead of ``memory://``, which would give each
    process a layer of its own and lose what they send each other without a word. A layer
    configured that keeps everything in one process is refused, with the fix. Returns the
    URL to build the layer from (``None``: the configured one).
    """
    import logging

    from kanal.layers import backend_for, layer_is_configured

    if url is None and not layer_is_configured():
        url = default_shared_layer_url()
        logging.getLogger("kanal").info(
            "no channel layer configured ($KANAL_LAYER): %s uses %s, shared by the kanal "
            "processes started in %s",
            what,
            url,
            os.getcwd(),
        )
    source = "--layer" if url is not None else "$KANAL_LAYER"
    named = url if url is not None else os.environ.get("KANAL_LAYER")
    if named is not None:
        if not backend_for(named).shared_across_processes:
            raise ConfigError(_one_process_layer(what, f"{named!r} ({source})"))
        _export_layer(named)
    return url


def _one_process_layer(what: str, layer: str) -> str:
    return (
        f"{what} runs several processes, but the channel layer {layer} keeps everything "
        "inside one process: each process would get a layer of its own, and what they send "
        "each other would be lost. Use ipc:// (the processes of this host; the default when "
        "no layer is configured) or redis:// (several hosts), e.g. "
        f"KANAL_LAYER={default_shared_layer_url()}"
    )


def _require_shared(what: str, layer: BaseChannelLayer) -> None:
    """Refuse a layer of one process that a framework configured (Django's settings)."""
    if not layer.shared_across_processes:
        raise ConfigError(_one_process_layer(what, f"{type(layer).__name__} (configured)"))


def _run_service(
    service: Stoppable,
    layer: BaseChannelLayer,
    args: argparse.Namespace,
    role: str,
) -> int:
    """Run ``service`` until SIGTERM or SIGINT has stopped it, then close ``layer``.

    With ``args.metrics`` (``[host:]port``), a metrics listener serves the process's
    counters; unless ``--no-inspect``, it answers ``kanal inspect`` as ``role`` on ``layer``.
    """
    import asyncio

    from kanal.inspect import attach, take_snapshot
    from kanal.worker import Worker
    from kanal.worker._lifecycle import serve_until_signalled

    log_level: str = args.log_level
    metrics: str | None = getattr(args, "metrics", None)
    counted = service if isinstance(service, Worker) else None

    # Every library's records, not only kanal's: those of the application's consumers too.
    configure_logging(log_level, logger="")
    if metrics is not None:
        from kanal.metrics import start_listener, worker_source

    async def run() -> None:
        listener = None
        stop_answering = None
        try:
            if metrics is not None:
                listener = await start_listener(
                    worker_source(service, role=role), metrics, log_level=log_level
                )
            if args.inspect is not False:
                stop_answering = await attach(
                    layer, lambda: take_snapshot(role=role, worker=counted)
                )
            await serve_until_signalled(service)
        finally:
            if stop_answering is not None:
                await stop_answering()
            if listener is not None:
                await listener.shutdown(grace=1.0)
            await layer.close()

    asyncio.run(run())
    return 0


def _serve(args: argparse.Namespace) -> int:
    from kanal.server import Config, run_config

    if args.bridge:
        if args.app is not None:
            raise ConfigError(
                f"kanal serve --bridge runs the bridge, not {args.app!r}: give the application "
                "to `kanal worker --bridge` instead"
            )
        args.app = "kanal.bridge.asgi:application"
    elif args.app is None:
        raise ConfigError("kanal serve needs an application (module:attr), or --bridge")
    else:
        args.app = _classic_or_app(args.app)
    config = Config.from_args(args)
    configure_logging(config.log_level)  # as run_config does: the layer's line is logged
    if args.bridge:
        _shared_layer("kanal serve --bridge (with its `kanal worker --bridge` processes)", None)
    elif config.workers > 1:
        _shared_layer(f"kanal serve --workers {config.workers}", None)
    return run_config(config)


def _classic_or_app(target: str) -> str:
    """``target`` itself, or the classic application when it names a routing list.

    The routing list travels to each server process through the environment, so that
    ``--workers`` and ``--reload`` (which import the application in new processes) work.
    """
    from kanal.classic import is_routing
    from kanal.server._config import import_string

    if target.endswith("()"):
        return target
    try:
        found = import_string(target)
    except Exception:
        return target  # the server reports it as it would any application
    if not is_routing(found):
        return target
    os.environ["KANAL_CLASSIC_ROUTING"] = target
    return "kanal.classic:application_from_environment()"


def _load_application(target: str) -> Any:
    """The ASGI application of ``target``; a classic routing list is wrapped in one."""
    from kanal.classic import ClassicApplication, is_routing
    from kanal.server import load_app
    from kanal.server._config import import_string

    if not target.endswith("()"):
        found = import_string(target)
        if is_routing(found):
            return ClassicApplication(found)  # type: ignore[arg-type]
    return load_app(target)


def add_serve_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``kanal serve module:attr``: run the interface server."""
    p = subparsers.add_parser(
        "serve",
        help="serve an ASGI application over HTTP/1.1 and WebSocket",
        description="Serve an ASGI 3 application (module:attr or module:factory()).",
    )
    p.add_argument("app", nargs="?", help="the application, as module:attr or module:factory()")
    p.add_argument(
        "--bridge",
        action="store_true",
        help="decoupled mode: hold the connections and forward them to `kanal worker "
        "--bridge` processes through the channel layer ($KANAL_LAYER)",
    )
    add = p.add_argument
    add("--host", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, help="TCP port (default 8000; 0 picks a free one)")
    add("--uds", help="listen on this unix domain socket instead")
    add("--fd", type=int, help="listen on this already open file descriptor")
    add("--workers", type=int, help="number of worker processes (default 1)")
    add("--root-path", help="ASGI root_path, for apps mounted below a prefix")
    add(
        "--proxy-headers",
        action="store_true",
        default=None,
        help="trust X-Forwarded-For/-Proto from --forwarded-allow-ips",
    )
    add("--forwarded-allow-ips", help="comma-separated proxy addresses to trust, or *")
    add("--ssl-certfile", help="TLS certificate (PEM)")
    add("--ssl-keyfile", help="TLS private key (PEM)")
    add("--ssl-keyfile-password", help="password of the TLS key")
    add("--limit-concurrency", type=int, help="answer 503 beyond this many connections")
    add("--backlog", type=int, help="listen backlog (default 2048)")
    add("--timeout-keep-alive", type=float, help="idle keep-alive seconds (5)")
    add("--timeout-header-read", type=float, help="seconds to send headers (10)")
    add(
        "--timeout-graceful-shutdown",
        type=float,
        help="seconds to drain at shutdown before cancelling (10)",
    )
    add("--ws-max-size", type=int, help="largest WebSocket message in bytes (1 MiB)")
    add("--ws-ping-interval", type=float, help="seconds between keepalive pings; 0 disables")
    add("--ws-ping-timeout", type=float, help="seconds to wait for a pong (20)")
    add(
        "--ws-per-message-deflate",
        action="store_true",
        default=None,
        help="accept permessage-deflate compression",
    )
    add(
        "--ws-direct-buffer-limit",
        type=int,
        help="bytes of direct broadcasts a WebSocket may leave unread (256 KiB)",
    )
    add(
        "--ws-direct-overflow",
        choices=["close", "drop"],
        help="past that: close with 1013 (default) or skip the broadcast for it",
    )
    add("--max-request-line", type=int, help="longest request target (8 KiB)")
    add("--max-header-bytes", type=int, help="largest request head (64 KiB)")
    add("--max-headers", type=int, help="most request headers (100)")
    add("--max-body-size", type=int, help="largest request body (no limit)")
    add("--lifespan", help="lifespan protocol: auto, on or off (auto)")
    add("--loop", help="event loop: auto, asyncio or uvloop (auto: uvloop if installed)")
    add("--access-log", action="store_true", default=None, help="log every request")
    _add_log_level(p, None)  # None: the Config's default
    add("--reload", action="store_true", default=None, help="restart on code changes")
    add("--reload-dir", dest="reload_dirs", action="append", help="directory to watch")
    add("--ready-file", help="create this file once listening")
    _add_metrics_options(p, dashboard=True)
    _add_inspect_option(p)
    p.set_defaults(handler=_serve)


def _worker(args: argparse.Namespace) -> int:
    from kanal.bridge import BridgeWorker
    from kanal.layers import get_channel_layer
    from kanal.worker import Worker

    def given(*names: str) -> dict[str, Any]:
        # Options left out are not passed: the classes' defaults are the defaults.
        return {name: getattr(args, name) for name in names if getattr(args, name) is not None}

    configure_logging(args.log_level, logger="")  # as _run_service does, for the layer's line
    application = _load_application(args.app)  # first: it may configure the layer (Django)
    what = "kanal worker --bridge" if args.bridge else "kanal worker"
    layer = get_channel_layer(
        _shared_layer(f"{what} (with the processes that feed it)", args.layer)
    )
    _require_shared(what, layer)
    service: Worker | BridgeWorker
    if args.bridge:
        if args.channels:
            raise ConfigError(
                "kanal worker --bridge takes connections from the bridge channel; "
                f"drop the channel names {args.channels}"
            )
        options = given("max_connections", "shutdown_timeout")
        service = BridgeWorker(application, layer=layer, **options)
    elif not args.channels:
        raise ConfigError("kanal worker needs CHANNEL names to receive from (or --bridge)")
    else:
        options = given("concurrency", "shutdown_timeout")
        service = Worker(application, args.channels, layer=layer, **options)
    return _run_service(service, layer, args, "worker")


def add_worker_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``kanal worker module:attr CHANNEL...``: run consumers for named channels."""
    p = subparsers.add_parser(
        "worker",
        help="run an application's consumers for messages on named channels",
        description=(
            "Receive messages from the named channels of the channel layer and run the "
            "application (route them with ChannelNameRouter) for each. Several workers on "
            "one channel share its messages."
        ),
    )
    p.add_argument("app", help="the application, as module:attr or module:factory()")
    p.add_argument("channels", nargs="*", metavar="CHANNEL", help="channel names to serve")
    p.add_argument(
        "--bridge",
        action="store_true",
        help="decoupled mode: run the application for connections held by "
        "`kanal serve --bridge` servers",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        help="with --bridge: connections served at once by this worker (1000)",
    )
    _add_layer_options(p)
    p.add_argument(
        "--concurrency",
        type=int,
        help="application instances per channel, i.e. messages handled at once (1)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=_positive_float,
        help="seconds to finish messages in progress on SIGTERM before handing them back (30)",
    )
    _add_metrics_options(p, dashboard=False)
    p.set_defaults(handler=_worker)


def _scheduler(args: argparse.Namespace) -> int:
    from kanal.layers import get_channel_layer
    from kanal.server._config import import_string
    from kanal.worker import Job, Scheduler

    jobs: list[Job] = []
    if args.jobs:
        try:
            found = import_string(args.jobs, default_attr="jobs")
        except ConfigError as exc:
            raise ConfigError(f"cannot load jobs from {args.jobs!r}: {exc}") from exc
        if not isinstance(found, Iterable):
            raise ConfigError(f"{args.jobs!r} is {found!r}, not a list of kanal.worker.Job")
        for job in found:
            if not isinstance(job, Job):
                raise ConfigError(f"{args.jobs!r} holds {job!r}, which is not a kanal.worker.Job")
            jobs.append(job)
    configure_logging(args.log_level, logger="")  # as _run_service does, for the layer's line
    what = "kanal scheduler (with the processes it sends to)"
    layer = get_channel_layer(_shared_layer(what, args.layer))
    _require_shared("kanal scheduler", layer)
    scheduler = Scheduler(jobs, layer=layer, accept_delayed=not args.no_delayed)
    return _run_service(scheduler, layer, args, "scheduler")


def add_scheduler_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """``kanal scheduler [module:jobs]``: periodic jobs and delayed messages."""
    p = subparsers.add_parser(
        "scheduler",
        help="send periodic messages and deliver delayed ones",
        description=(
            "Fire the periodic jobs of module:attr (a list of kanal.worker.Job) and deliver "
            "messages sent with send_later(). Run several: each tick and each delayed "
            "message is sent once."
        ),
    )
    p.add_argument("jobs", nargs="?", help="module:attr holding a list of Job (optional)")
    _add_layer_options(p)
    p.add_argument(
        "--no-delayed", action="store_true", help="only fire jobs; leave send_later() to others"
    )
    p.set_defaults(handler=_scheduler)


def _mqtt(args: argparse.Namespace) -> int:
    from kanal.layers import get_channel_layer
    from kanal.mqtt import MqttConfig, MqttServer
    from kanal.server import load_app

    _export_layer(args.layer)
    config = MqttConfig.from_args(args)
    application = load_app(args.app)
    layer = get_channel_layer(args.layer)
    return _run_service(MqttServer(application, config), layer, args, "mqtt")


def add_mqtt_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``kanal mqtt module:attr --broker mqtt://host:1883``: run the MQTT interface server."""
    p = subparsers.add_parser(
        "mqtt",
        help="run an application for the messages of an MQTT broker",
        description=(
            "Connect to an MQTT broker and run the application (module:attr) with a scope "
            "of type 'mqtt': it subscribes, receives each message as an event, and "
            "publishes. Reconnects by itself; SIGTERM finishes the messages in progress."
        ),
    )
    p.add_argument("app", help="the application, as module:attr or module:factory()")
    add = p.add_argument
    add("--broker", help="mqtt://[user[:password]@]host[:port] or mqtts://... (mqtt://127.0.0.1)")
    add("--client-id", help="MQTT client identifier (required with --persistent-session)")
    add("--mqtt-version", choices=["5", "3.1.1"], help="protocol version (5)")
    add(
        "--persistent-session",
        dest="clean_session",
        action="store_false",
        default=None,
        help="keep subscriptions and queued QoS 1/2 messages at the broker while away",
    )
    add("--session-expiry", type=int, help="MQTT 5: seconds a persistent session outlives us")
    add("--keepalive", type=int, help="seconds between keepalive pings (30)")
    add("--username", help="user name (or in --broker)")
    add("--password", help="password; better $KANAL_MQTT_PASSWORD, which others cannot see")
    add("--tls-ca", help="CA bundle to verify the broker (mqtts://; default: the system's)")
    add("--tls-cert", help="client certificate (PEM) for mutual TLS")
    add("--tls-key", help="key of the client certificate")
    add(
        "--tls-insecure",
        action="store_true",
        default=None,
        help="do not check the broker's host name",
    )
    add("--receive-maximum", type=int, help="QoS 1/2 messages in progress at most (100)")
    add("--max-queued-qos0", type=int, help="QoS 0 messages waiting before drops (1000)")
    add(
        "--shutdown-timeout",
        type=_positive_float,
        help="seconds to finish the messages in progress on SIGTERM (10)",
    )
    _add_layer_options(p)
    p.set_defaults(handler=_mqtt)


def _inspect(args: argparse.Namespace) -> int:
    from kanal.inspect._command import inspect

    url: str = args.url or os.environ.get("KANAL_LAYER") or default_shared_layer_url()
    return inspect(url, once=args.once, as_json=args.json, interval=args.interval, wait=args.wait)


def add_inspect_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``kanal inspect [URL]``: the processes attached to a channel layer, live."""
    p = subparsers.add_parser(
        "inspect",
        help="show the processes attached to a channel layer, live",
        description=(
            "Ask every kanal process attached to the channel layer at URL (they answer "
            "through it) what it is doing: connections, message rates, drops, what waits, "
            "the largest groups; refreshed in place. For a server on memory://, give its "
            "metrics listener's URL (http://127.0.0.1:PORT of kanal serve --metrics PORT)."
        ),
    )
    p.add_argument(
        "url",
        nargs="?",
        help="a layer URL or http://HOST:PORT (default: $KANAL_LAYER, else ipc:// for this "
        "project)",
    )
    p.add_argument("--once", action="store_true", help="show one sample and exit (1: none)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples (1)")
    p.add_argument(
        "--wait", type=float, default=0.5, help="seconds to wait for the processes' answers (0.5)"
    )
    p.set_defaults(handler=_inspect)


def build_parser() -> argparse.ArgumentParser:
    """The ``kanal`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="kanal", description="kanal: channels for Python")
    parser.add_argument("--version", action="version", version=f"kanal {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_serve_command(subparsers)
    add_worker_command(subparsers)
    add_scheduler_command(subparsers)
    add_mqtt_command(subparsers)
    add_inspect_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kanal`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    log_format = getattr(args, "log_format", None)
    if log_format:
        # Read by configure_logging here and in every process this command starts.
        os.environ[LOG_FORMAT_ENV] = log_format
    try:
        return handler(args)
    except KanalError as exc:
        print(f"kanal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
