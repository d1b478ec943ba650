"""What the decoupled mode costs: in-process vs decoupled, both on the Redis layer.

In-process: ``kanal serve bench.apps:app`` runs the hello-world/echo app itself.
Decoupled: ``kanal serve --bridge`` holds the sockets and ``kanal worker --bridge
bench.apps:app`` runs the app, every event crossing a real ``redis-server`` (started here on
a free port) twice. Figures: HTTP requests/s and p99 (wrk), WebSocket echo messages/s and
p99 (64 connections). Each figure is repeated and the medians compared in one run.

    python -m bench.modes [--repeats N] [--seconds S]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

from bench._common import Figure, emit
from bench.server import (
    APP,
    ROOT,
    SECONDS,
    Cpus,
    ServerFailed,
    _stop,
    _wait_ready,
    ensure_wrk,
    free_port,
    log,
    raise_fd_limit,
    wrk,
    ws_echo,
)
from kanal.testing import RedisServer

MODES = ("in-process", "decoupled")


def _kanal(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from kanal.cli import main; sys.exit(main())", *args]


@contextlib.contextmanager
def _processes(commands: list[list[str]], env: dict[str, str], port: int) -> Iterator[None]:
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryFile() as output:
        try:
            for command in commands:
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=ROOT,
                        env=env,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
            if not _wait_ready(port, procs[0]):
                output.seek(0)
                tail = output.read().decode(errors="replace")[-3000:]
                raise ServerFailed(f"{commands} did not serve:\n{tail}")
            yield
        finally:
            for proc in reversed(procs):
                _stop(proc)


@contextlib.contextmanager
def serve_mode(mode: str, redis_url: str, cpus: Cpus) -> Iterator[int]:
    """Run ``mode``'s processes on the server CPU while the context lasts; yields the port."""
    port = free_port()
    env = dict(
        os.environ,
        KANAL_LAYER=redis_url,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    listen = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    if mode == "in-process":
        commands = [cpus.pin(cpus.server, _kanal("serve", APP, *listen))]
    else:
        commands = [
            cpus.pin(cpus.server, _kanal("serve", "--bridge", *listen)),
            cpus.pin(cpus.server, _kanal("worker", "--bridge", APP, "--log-level", "warning")),
        ]
    with _processes(commands, env, port):
        yield port


def run(repeats: int = 3, *, seconds: float = SECONDS) -> list[Figure]:
    """Measure both modes ``repeats`` times; return the figures."""
    raise_fd_limit()
    wrk_path = ensure_wrk()
    cpus = Cpus.pick()
    figures: dict[tuple[str, str], Figure] = {}

    def figure(name: str, impl: str, unit: str, higher: bool = True) -> Figure:
        key = (name, impl)
        if key not in figures:
            figures[key] = Figure("modes", name, impl, unit, higher_is_better=higher)
        return figures[key]

    with RedisServer() as redis:
        log(f"redis-server on {redis.url}; {repeats} repeat(s) of {seconds:g} s loads")
        for repeat in range(repeats):
            order = MODES if repeat % 2 == 0 else MODES[::-1]
            for mode in order:
                impl = f"kanal {mode}"
                try:
                    with serve_mode(mode, redis.url, cpus) as port:
                        rate, p99 = wrk(wrk_path, port, seconds, cpus)
                        figure("http hello req/s", impl, "req/s").samples.append(rate)
                        figure("http hello p99", impl, "ms", False).samples.append(p99)
                        echo = ws_echo(port, seconds, cpus)
                        figure("ws echo msg/s", impl, "msg/s").samples.append(echo["rate"])
                        figure("ws echo p99", impl, "ms", False).samples.append(echo["p99_ms"])
                except (ServerFailed, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
                    log(f"{mode} failed in repeat {repeat + 1}: {exc}")
    return list(figures.values())


def main(argv: list[str] | None = None) -> int:
    """Command line: run the suite and print the table and JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m bench.modes", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args(argv)
    emit(run(args.repeats, seconds=args.seconds), baseline_impl="kanal in-process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
