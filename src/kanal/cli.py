"""The ``kanal`` command: ``kanal serve`` (and room for more subcommands).

Each subcommand registers itself with a function ``add_<name>_command(subparsers)`` that
sets ``handler`` on its parser; :func:`main` parses and calls it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from kanal import __version__
from kanal.exceptions import ConfigError, KanalError

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _serve(args: argparse.Namespace) -> int:
    from kanal.server import Config, run_config

    if args.ws_ping_interval is not None and args.ws_ping_interval <= 0:
        args.ws_ping_interval = None
        args.ws_ping_interval_off = True
    if args.bridge:
        if args.app is not None:
            raise ConfigError(
                f"kanal serve --bridge runs the bridge, not {args.app!r}: give the application "
                "to `kanal worker --bridge` instead"
            )
        args.app = "kanal.bridge.asgi:application"
    elif args.app is None:
        raise ConfigError("kanal serve needs an application (module:attr), or --bridge")
    config = Config.from_args(args)
    if getattr(args, "ws_ping_interval_off", False):
        config.ws_ping_interval = None
    return run_config(config)


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
    add("--timeout-keep-alive", type=_positive_float, help="idle keep-alive seconds (5)")
    add("--timeout-header-read", type=_positive_float, help="seconds to send headers (10)")
    add(
        "--timeout-graceful-shutdown",
        type=_positive_float,
        help="seconds to drain at shutdown before cancelling (10)",
    )
    add("--ws-max-size", type=int, help="largest WebSocket message in bytes (1 MiB)")
    add("--ws-ping-interval", type=float, help="seconds between keepalive pings; 0 disables")
    add("--ws-ping-timeout", type=_positive_float, help="seconds to wait for a pong (20)")
    add(
        "--ws-per-message-deflate",
        action="store_true",
        default=None,
        help="accept permessage-deflate compression",
    )
    add("--max-request-line", type=int, help="longest request target (8 KiB)")
    add("--max-header-bytes", type=int, help="largest request head (64 KiB)")
    add("--max-headers", type=int, help="most request headers (100)")
    add("--max-body-size", type=int, help="largest request body (no limit)")
    add("--lifespan", choices=["auto", "on", "off"], help="lifespan protocol (auto)")
    add("--loop", choices=["auto", "asyncio", "uvloop"], help="event loop (auto: uvloop)")
    add("--access-log", action="store_true", default=None, help="log every request")
    add("--log-level", choices=["critical", "error", "warning", "info", "debug", "trace"])
    add("--reload", action="store_true", default=None, help="restart on code changes")
    add("--reload-dir", dest="reload_dirs", action="append", help="directory to watch")
    add("--ready-file", help="create this file once listening")
    p.set_defaults(handler=_serve)


def _worker(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from kanal.bridge import BridgeWorker
    from kanal.layers import get_channel_layer
    from kanal.server import load_app
    from kanal.worker import Worker

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    application = load_app(args.app)
    layer = get_channel_layer(args.layer)
    if args.bridge:
        if args.channels:
            raise ConfigError(
                "kanal worker --bridge takes connections from the bridge channel; "
                f"drop the channel names {args.channels}"
            )
        bridge = BridgeWorker(
            application,
            layer=layer,
            max_connections=args.max_connections,
            shutdown_timeout=args.shutdown_timeout,
        )
    elif not args.channels:
        raise ConfigError("kanal worker needs CHANNEL names to receive from (or --bridge)")
    else:
        worker = Worker(
            application,
            args.channels,
            layer=layer,
            concurrency=args.concurrency,
            shutdown_timeout=args.shutdown_timeout,
        )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = bridge.stop if args.bridge else worker.stop
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        try:
            await (bridge.run() if args.bridge else worker.run())
        finally:
            await layer.close()

    asyncio.run(run())
    return 0


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
        default=1000,
        help="with --bridge: connections served at once by this worker (1000)",
    )
    p.add_argument("--layer", help="channel layer URL (default: $KANAL_LAYER, else memory://)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="application instances per channel, i.e. messages handled at once (1)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=_positive_float,
        default=30.0,
        help="seconds to finish messages in progress on SIGTERM before handing them back (30)",
    )
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.set_defaults(handler=_worker)


def _scheduler(args: argparse.Namespace) -> int:
    import asyncio
    import importlib
    import logging
    import signal

    from kanal.layers import get_channel_layer
    from kanal.worker import Job, Scheduler

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    jobs: list[Job] = []
    if args.jobs:
        module_name, _, attribute = args.jobs.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attribute or "jobs")
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot load jobs from {args.jobs!r}: {exc}") from exc
        jobs = list(found)
        for job in jobs:
            if not isinstance(job, Job):
                raise ConfigError(f"{args.jobs!r} holds {job!r}, which is not a kanal.worker.Job")
    layer = get_channel_layer(args.layer)
    scheduler = Scheduler(jobs, layer=layer, accept_delayed=not args.no_delayed)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, scheduler.stop)
        try:
            await scheduler.run()
        finally:
            await layer.close()

    asyncio.run(run())
    return 0


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
    p.add_argument("--layer", help="channel layer URL (default: $KANAL_LAYER, else memory://)")
    p.add_argument(
        "--no-delayed", action="store_true", help="only fire jobs; leave send_later() to others"
    )
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.set_defaults(handler=_scheduler)


def build_parser() -> argparse.ArgumentParser:
    """The ``kanal`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="kanal", description="kanal: channels for Python")
    parser.add_argument("--version", action="version", version=f"kanal {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_serve_command(subparsers)
    add_worker_command(subparsers)
    add_scheduler_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kanal`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KanalError as exc:
        print(f"kanal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
