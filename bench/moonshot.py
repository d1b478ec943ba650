"""The moonshot: 10,000 sockets in one room over two ``kanal serve`` processes on Redis.

Each server runs in a network namespace of its own (``bench/netns.sh``: a veth pair each), so
that the two talk to their clients and to Redis over separate network stacks, as two hosts
would. One ``redis-server`` on this host listens on both veth addresses. The load client
(``bench.fanout``'s, cheap per frame) opens half of the sockets on each server, all in one
room of the chat example (direct delivery, docs/direct.md); one of the sockets sends a line
every 100 ms, and every socket in the room receives it: the sender's server writes it to its
half directly, the other server hears it from Redis. The target is a broadcast p99 under
50 ms (send -> receipt, over every socket and line).

For context, the same client and room against the frame-once server (``bench.chat_e2e``'s
ceiling: no layer, no framework, one process) in one namespace, with ``--limit``.

Needs root (``ip netns``); not part of ``python -m bench`` (it changes the host's network
set-up for its run). Run ``python -m bench.moonshot [--sockets 10000] [--seconds 20]
[--repeats 3] [--limit]``; it prints one JSON line per run and a summary with medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.fanout import log
from bench.server import ROOT, _stop, _wait_ready

NETNS = Path(__file__).with_name("netns.sh")
# bench/netns.sh's addresses: (namespace, the server's address, the host's end of its pair).
SERVERS = [("kanal-a", "10.77.1.2", "10.77.1.1"), ("kanal-b", "10.77.2.2", "10.77.2.1")]
PORT = 8000  # each namespace has ports of its own
TARGET_P99_MS = 50.0


@contextlib.contextmanager
def namespaces() -> Iterator[None]:
    """bench/netns.sh up, and down afterwards whatever happens."""
    subprocess.run(["sh", str(NETNS), "up"], check=True)
    try:
        yield
    finally:
        subprocess.run(["sh", str(NETNS), "down"], check=False)


@contextlib.contextmanager
def redis_on_both() -> Iterator[int]:
    """A redis-server reachable from both namespaces; yields its port."""
    from kanal.testing import RedisServer

    hosts = " ".join(host for _, _, host in SERVERS)
    server = RedisServer(host=SERVERS[0][2], args=["--bind", hosts, "--protected-mode", "no"])
    with server:
        yield server.port


def _listening(proc: subprocess.Popen[bytes], address: str) -> bool:
    """True once something accepts TCP (the frame-once server has no HTTP to ask)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection((address, PORT), 1):
            return True
        time.sleep(0.05)  # a process we do not control: poll, bounded by the deadline
    return False


def _answering(proc: subprocess.Popen[bytes], address: str) -> bool:
    return _wait_ready(PORT, proc, host=address)


@contextlib.contextmanager
def in_namespace(
    namespace: str,
    address: str,
    command: list[str],
    env: dict[str, str],
    cpu: int | None,
    ready: Callable[[subprocess.Popen[bytes], str], bool] = _answering,
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` in ``namespace``, open-files limit raised to the hard one, until stopped."""
    pinned = ["taskset", "-c", str(cpu), *command] if cpu is not None else command
    script = 'ulimit -n "$(ulimit -Hn)" && exec ' + shlex.join(pinned)
    full = ["ip", "netns", "exec", namespace, "sh", "-c", script]
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            full, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            if not ready(proc, address):
                output.seek(0)
                tail = output.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{namespace}: {' '.join(command)} did not serve:\n{tail}")
            yield proc
        finally:
            _stop(proc)


def kanal_serve(address: str) -> list[str]:
    return [
        sys.executable, "-c", "import sys; from kanal.cli import main; sys.exit(main())",
        "serve", "examples.chat.app:application",
        "--host", address, "--port", str(PORT),
    ]  # fmt: skip


def drive(targets: list[tuple[str, int]], sockets: int, seconds: float) -> dict[str, Any]:
    """bench.fanout's load client against ``targets``; its JSON result."""
    interval = 0.1  # one broadcast every 100 ms
    command = [
        sys.executable, "-m", "bench.fanout", "client", "--path", "/ws/chat/moonshot/",
        "--clients", str(sockets), "--lines", str(int(seconds / interval)),
        "--interval", str(interval),
        *(arg for host, port in targets for arg in ("--target", f"{host}:{port}")),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=seconds + 600)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"load client failed: {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def run_kanal(sockets: int, seconds: float) -> dict[str, Any]:
    """Two kanal servers, one per namespace, on one Redis."""
    with redis_on_both() as redis_port, contextlib.ExitStack() as stack:
        for cpu, (namespace, address, host) in enumerate(SERVERS):
            env = dict(
                os.environ,
                KANAL_LAYER=f"redis://{host}:{redis_port}/0",
                CHAT_ALLOWED_ORIGINS=f"http://{address}:{PORT}",
            )
            stack.enter_context(in_namespace(namespace, address, kanal_serve(address), env, cpu))
        return drive([(address, PORT) for _, address, _ in SERVERS], sockets, seconds)


def run_limit(sockets: int, seconds: float) -> dict[str, Any]:
    """The frame-once server in the first namespace, every socket on it."""
    namespace, address, _ = SERVERS[0]
    command = [
        sys.executable, "-m", "bench.chat_e2e", "ceiling", "--host", address,
        "--port", str(PORT),
    ]  # fmt: skip
    with in_namespace(namespace, address, command, dict(os.environ), 0, _listening):
        return drive([(address, PORT)], sockets, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.moonshot", description=__doc__)
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long lines are sent")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", action="store_true", help="also run the frame-once server")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root, for ip netns (bench/netns.sh)")
    runs: dict[str, list[dict[str, Any]]] = {"kanal": [], "frame-once": []}
    with namespaces():
        for repeat in range(args.repeats):
            for impl, runner in (("kanal", run_kanal), ("frame-once", run_limit)):
                if impl == "frame-once" and not args.limit:
                    continue
                try:
                    result = runner(args.sockets, args.seconds)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    log(f"{impl} failed in repeat {repeat + 1}: {exc}")
                    continue
                runs[impl].append(result)
                print(json.dumps({"impl": impl, "repeat": repeat + 1, **result}), flush=True)
    for impl, results in runs.items():
        if not results:
            continue
        p99 = statistics.median(r["p99_ms"] for r in results)
        p50 = statistics.median(r["p50_ms"] for r in results)
        delivered = statistics.median(100 * r["delivered"] / r["expected"] for r in results)
        verdict = "met" if p99 < TARGET_P99_MS else "not met"
        print(
            f"{impl}: {args.sockets} sockets, one broadcast per 100 ms, {len(results)} runs: "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (median; best "
            f"{min(r['p99_ms'] for r in results):.1f} ms), delivered {delivered:.2f} %"
            + (f"; target p99 < {TARGET_P99_MS:g} ms {verdict}" if impl == "kanal" else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
