"""Interface servers: ``kanal serve`` against uvicorn, Hypercorn and Daphne, in one run.

Each server runs the same ASGI app (``bench.apps:app``) as one process pinned to one CPU, with
the load generator pinned to the other CPU, and with uvloop and httptools where the server
supports them (uvicorn: uvloop + httptools + websockets' sans-I/O implementation; Hypercorn:
uvloop, h11 being its only HTTP/1.1 parser; Daphne: Twisted). Figures:

* ``http hello``: hello-world requests/s and p99 latency, measured by ``wrk`` (installed with
  apt-get when missing) with 64 connections for a fixed time, after a 1 s warm-up;
* ``ws echo``: messages/s and p99 round trip with 64 WebSocket connections, each echoing one
  64-byte text message at a time, driven by ``bench._wsclient`` (a lean uvloop client in its own
  process). The same client against a trivial raw echo server gives the client's ceiling
  (impl ``client-ceiling``): a server figure close to it is limited by the client, not itself;
* ``http hello per CPU-s`` and ``ws echo per CPU-s``: requests (messages) per second of server
  CPU time (user + system, from /proc) over the same windows. On a shared machine a server
  that other processes starve serves less but also burns less, so this ratio is much steadier
  than the raw rate and shows what each server costs;
* ``ws idle``: server RSS per idle WebSocket connection at 1,000 and 5,000 connections (RSS of
  the server process tree after opening them minus before, divided by the count), and at 1,000
  when the client offers permessage-deflate (servers that accept it keep zlib state per
  connection).

``--servers kanal,kanal-metrics`` compares kanal with itself with ``--metrics`` on (nobody
scraping): what metrics cost on the hot path.

Every repeat starts fresh server processes (memory is measured on a server that has served
nothing else) and rotates the order of the servers. Medians of the repeats are reported, with
the ratio kanal/peer (``kanal x`` > 1 means kanal is better).

Run ``python -m bench server [--repeats N]`` or
``python -m bench.server [--repeats N] [--servers kanal,uvicorn] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench._common import Figure, emit

__all__ = ["SERVERS", "run"]

SUITE = "server"
ROOT = Path(__file__).resolve().parent.parent
APP = "bench.apps:app"
CONNECTIONS = 64
SECONDS = 5.0  # per load measurement, after a 1 s warm-up
WARMUP = 1.0
MESSAGE_SIZE = 64
INFLIGHT = 4  # messages in flight per connection for the "in flight" echo figures
IDLE_COUNTS = (1_000, 5_000)
DEFLATE_COUNT = 1_000
# Bounds on every wait: a server that hangs fails its figure instead of the whole run.
START_TIMEOUT = 30.0
CLIENT_SLACK = 60.0
STOP_TIMEOUT = 10.0


def _kanal_command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("kanal")
    exe = (
        [str(script)]
        if script.exists()
        else [
            sys.executable,
            "-c",
            "import sys; from kanal.cli import main; sys.exit(main())",
        ]
    )
    return [*exe, "serve", APP, "--host", "127.0.0.1", "--port", str(port)]


SERVERS: dict[str, Callable[[int], list[str]]] = {
    "kanal": _kanal_command,
    # Only when asked for (--servers): kanal with --metrics, for what metrics cost.
    "kanal-metrics": lambda port: [*_kanal_command(port), "--metrics", str(free_port())],
    "uvicorn": lambda port: [
        sys.executable,
        "-m",
        "uvicorn",
        APP,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--ws",
        "websockets-sansio",
        "--no-access-log",
        "--log-level",
        "warning",
    ],
    "hypercorn": lambda port: [
        sys.executable,
        "-m",
        "hypercorn",
        APP,
        "--bind",
        f"127.0.0.1:{port}",
        "--worker-class",
        "uvloop",
        "--workers",
        "1",
    ],
    "daphne": lambda port: [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "-v",
        "0",
        APP,
    ],
}


@dataclass
class Cpus:
    """Which CPU the server gets and which the load generator gets (None: no pinning)."""

    server: str | None
    client: str | None

    @classmethod
    def pick(cls) -> Cpus:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        return cls(str(cpus[0]), str(cpus[1]))

    def pin(self, cpu: str | None, command: list[str]) -> list[str]:
        return ["taskset", "-c", cpu, *command] if cpu is not None else command


def log(text: str) -> None:
    """Progress on stderr, so stdout stays the table and the JSON lines."""
    print(f"[bench.server] {text}", file=sys.stderr, flush=True)


def raise_fd_limit() -> None:
    """Raise the soft open-files limit to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    needed = max(IDLE_COUNTS) + DEFLATE_COUNT + 100
    if hard < needed:
        log(f"open-files limit {hard} < {needed}: the idle figures will fail")


def ensure_wrk() -> str:
    """The path of ``wrk``, installing Debian's package when it is missing."""
    path = shutil.which("wrk")
    if path:
        return path
    log("wrk not found: installing it with apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env, timeout=300)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env, timeout=300
    )
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is still missing after apt-get install wrk")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, in KiB."""
    total = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and its descendants."""
    ticks = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class ServerFailed(RuntimeError):
    """The server did not start or did not answer; the message carries its log's tail."""


@contextlib.contextmanager
def serve(name: str, cpus: Cpus) -> Iterator[tuple[int, int]]:
    """Start server ``name`` on a free port; yields (port, pid); stops it afterwards."""
    port = free_port()
    command = cpus.pin(cpus.server, SERVERS[name](port))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            if not _wait_ready(port, proc):
                output.seek(0)
                tail = output.read().decode(errors="replace")[-2000:]
                raise ServerFailed(f"{name} did not serve ({' '.join(command)}):\n{tail}")
            yield port, proc.pid
        finally:
            _stop(proc)


def _wait_ready(port: int, proc: subprocess.Popen[bytes], host: str = "127.0.0.1") -> bool:
    """True once GET / answers 200; False if the process exits or START_TIMEOUT passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            # Still importing: nothing to wait on in a process we do not control, so poll,
            # bounded by the deadline.
            time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)


_LATENCY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(output: str) -> tuple[float, float]:
    """(requests/s, p99 latency in ms) from ``wrk --latency`` output; errors raise."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    if rate is None or p99 is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", output)
    if errors:
        raise ValueError(f"wrk saw errors: {errors.group(0)}")
    return float(rate.group(1)), float(p99.group(1)) * _LATENCY_UNITS[p99.group(2)]


def wrk(wrk_path: str, port: int, seconds: float, cpus: Cpus) -> tuple[float, float]:
    """Run wrk against the hello world on ``port``; (requests/s, p99 ms)."""
    command = cpus.pin(
        cpus.client,
        [
            wrk_path,
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            f"http://127.0.0.1:{port}/",
        ],
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + CLIENT_SLACK)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def _client(mode: str, port: int, cpus: Cpus, *args: str) -> list[str]:
    return cpus.pin(
        cpus.client, [sys.executable, "-m", "bench._wsclient", mode, "--port", str(port), *args]
    )


def ws_echo(
    port: int, seconds: float, cpus: Cpus, server_pid: int | None = None, inflight: int = 1
) -> dict[str, float]:
    """Closed-loop echo with CONNECTIONS connections; the client's JSON result.

    With ``server_pid``, the result also has ``server_cpu_seconds``: the server's CPU time
    within the client's timed window (read when the client announces and closes it).
    """
    command = _client(
        "echo", port, cpus, "--connections", str(CONNECTIONS), "--seconds", str(seconds),
        "--warmup", str(WARMUP), "--size", str(MESSAGE_SIZE), "--inflight", str(inflight),
    )  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + seconds + WARMUP + CLIENT_SLACK
    cpu0 = 0.0
    try:
        while True:
            ready, _, _ = select.select(
                [proc.stdout], [], [], max(0.0, deadline - time.monotonic())
            )
            line = proc.stdout.readline() if ready else b""
            if not line:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"echo client failed: {proc.stderr.read().decode()[-2000:]}")
            message = json.loads(line)
            if message.get("phase") == "measuring":
                cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
                continue
            result: dict[str, float] = message
            if server_pid:
                result["server_cpu_seconds"] = cpu_seconds(server_pid) - cpu0
            break
        proc.wait(timeout=CLIENT_SLACK)
        return result
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@contextlib.contextmanager
def idle_clients(port: int, count: int, cpus: Cpus, deflate: bool) -> Iterator[int]:
    """Hold ``count`` idle connections open (in a client process); yields how many opened."""
    args = ["--connections", str(count)] + (["--deflate"] if deflate else [])
    proc = subprocess.Popen(
        _client("idle", port, cpus, *args),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT + count / 100)
        line = proc.stdout.readline() if ready else b""
        if not line:
            proc.kill()
            raise RuntimeError(
                f"idle client did not open {count} connections: "
                f"{proc.stderr.read().decode(errors='replace')[-2000:]}"
            )
        yield int(json.loads(line)["open"])
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(b"close\n")
            proc.stdin.close()
        try:
            proc.wait(timeout=CLIENT_SLACK)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def settle_rss(pid: int) -> int:
    """RSS after the server has handled everything in flight (two reads 0.3 s apart agree)."""
    previous = rss_kb(pid)
    for _ in range(20):  # bounded: at most ~6 s
        time.sleep(0.3)
        current = rss_kb(pid)
        if abs(current - previous) < 64:
            return current
        previous = current
    return previous


class Recorder:
    """Figures of this run, keyed by (figure name, impl)."""

    def __init__(self) -> None:
        self.figures: dict[tuple[str, str], Figure] = {}

    def add(self, name: str, impl: str, unit: str, value: float, higher: bool = True) -> None:
        key = (name, impl)
        if key not in self.figures:
            self.figures[key] = Figure(SUITE, name, impl, unit, higher_is_better=higher)
        self.figures[key].samples.append(value)

    def declare(self, name: str, impl: str, unit: str, higher: bool = True) -> None:
        """Make the figure appear (without samples) even if the impl fails to run."""
        key = (name, impl)
        if key not in self.figures:
            self.figures[key] = Figure(SUITE, name, impl, unit, higher_is_better=higher)


FIGURES = [
    ("http hello", "req/s", True),
    ("http hello p99", "ms", False),
    ("http hello per CPU-s", "req/CPU-s", True),
    ("ws echo", "msg/s", True),
    ("ws echo p99", "ms", False),
    ("ws echo per CPU-s", "msg/CPU-s", True),
    (f"ws echo {INFLIGHT} in flight", "msg/s", True),
    (f"ws echo {INFLIGHT} in flight per CPU-s", "msg/CPU-s", True),
    *((f"ws idle @{n}", "KB/conn", False) for n in IDLE_COUNTS),
    (f"ws idle @{DEFLATE_COUNT} deflate offered", "KB/conn", False),
]


def measure_load(name: str, rec: Recorder, wrk_path: str, seconds: float, cpus: Cpus) -> None:
    """HTTP and WebSocket echo figures for one server (one fresh process)."""
    with serve(name, cpus) as (port, pid):
        wrk(wrk_path, port, WARMUP, cpus)  # warm-up, not recorded
        cpu0 = cpu_seconds(pid)
        rate, p99 = wrk(wrk_path, port, seconds, cpus)
        http_cpu = cpu_seconds(pid) - cpu0
        rec.add("http hello", name, "req/s", rate)
        rec.add("http hello p99", name, "ms", p99, higher=False)
        # Requests per second of server CPU: what the server costs, robust to other load on
        # a shared machine (a starved server serves less but also burns less).
        rec.add("http hello per CPU-s", name, "req/CPU-s", rate * seconds / max(http_cpu, 1e-3))
        result = ws_echo(port, seconds, cpus, pid)
        ws_cpu = result["server_cpu_seconds"]
        rec.add("ws echo", name, "msg/s", result["rate"])
        rec.add("ws echo p99", name, "ms", result["p99_ms"], higher=False)
        rec.add("ws echo per CPU-s", name, "msg/CPU-s", result["messages"] / max(ws_cpu, 1e-3))
        # With several messages in flight per connection the server stays busy even when
        # wake-up latency (the client's, or a machine shared with other work) would idle it:
        # this is the server's echo capacity, where the figure above is request/response.
        busy = ws_echo(port, seconds, cpus, pid, INFLIGHT)
        rec.add(f"ws echo {INFLIGHT} in flight", name, "msg/s", busy["rate"])
        rec.add(
            f"ws echo {INFLIGHT} in flight per CPU-s",
            name,
            "msg/CPU-s",
            busy["messages"] / max(busy["server_cpu_seconds"], 1e-3),
        )
        # The CPU shares show who is the bottleneck: a server near 100% is saturated.
        log(
            f"{name}: {rate:.0f} req/s (p99 {p99:.2f} ms, server CPU "
            f"{100 * http_cpu / seconds:.0f}%), {result['rate']:.0f} echo msg/s (p99 "
            f"{result['p99_ms']:.2f} ms, server CPU {100 * ws_cpu / result['seconds']:.0f}%, "
            f"client CPU {100 * result['cpu_seconds'] / result['seconds']:.0f}%); "
            f"{INFLIGHT} in flight: {busy['rate']:.0f} msg/s (server CPU "
            f"{100 * busy['server_cpu_seconds'] / busy['seconds']:.0f}%, client CPU "
            f"{100 * busy['cpu_seconds'] / busy['seconds']:.0f}%)"
        )


def measure_idle(name: str, rec: Recorder, cpus: Cpus) -> None:
    """Idle-connection memory for one server: a fresh process for each of the two settings."""
    with serve(name, cpus) as (port, pid):
        ws_echo(port, 0.2, cpus)  # one round of traffic: lazy imports and first buffers
        base = settle_rss(pid)
        held = 0
        with contextlib.ExitStack() as stack:
            for count in IDLE_COUNTS:
                held += stack.enter_context(idle_clients(port, count - held, cpus, False))
                if held != count:
                    raise RuntimeError(f"{name}: only {held} of {count} connections stayed open")
                per_conn = (settle_rss(pid) - base) * 1.024 / count  # KiB -> KB
                rec.add(f"ws idle @{count}", name, "KB/conn", per_conn, higher=False)
                log(f"{name}: {per_conn:.1f} KB per idle WebSocket at {count}")
    with serve(name, cpus) as (port, pid):
        ws_echo(port, 0.2, cpus)
        base = settle_rss(pid)
        with idle_clients(port, DEFLATE_COUNT, cpus, True) as opened:
            per_conn = (settle_rss(pid) - base) * 1.024 / max(opened, 1)
        rec.add(
            f"ws idle @{DEFLATE_COUNT} deflate offered", name, "KB/conn", per_conn, higher=False
        )
        log(f"{name}: {per_conn:.1f} KB per idle WebSocket at {DEFLATE_COUNT}, deflate offered")


def measure_ceiling(rec: Recorder, seconds: float, cpus: Cpus) -> None:
    """The echo client against a raw echo server: the most the client can measure."""
    port = free_port()
    server = subprocess.Popen(
        cpus.pin(
            cpus.server,
            [
                sys.executable,
                "-m",
                "bench._wsclient",
                "ceiling",
                "--port",
                str(port),
                "--size",
                str(MESSAGE_SIZE),
            ],
        ),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        ready, _, _ = select.select([server.stdout], [], [], START_TIMEOUT)
        if not ready or not server.stdout.readline():
            raise RuntimeError("the ceiling server did not start")
        result = ws_echo(port, seconds, cpus, server.pid)
        rec.add("ws echo", "client-ceiling", "msg/s", result["rate"])
        rec.add("ws echo p99", "client-ceiling", "ms", result["p99_ms"], higher=False)
        busy = ws_echo(port, seconds, cpus, server.pid, INFLIGHT)
        rec.add(f"ws echo {INFLIGHT} in flight", "client-ceiling", "msg/s", busy["rate"])
        log(
            f"client ceiling: {result['rate']:.0f} echo msg/s, client CPU "
            f"{100 * result['cpu_seconds'] / result['seconds']:.0f}%, raw server CPU "
            f"{100 * result['server_cpu_seconds'] / result['seconds']:.0f}%; {INFLIGHT} in "
            f"flight: {busy['rate']:.0f} msg/s, client CPU "
            f"{100 * busy['cpu_seconds'] / busy['seconds']:.0f}%"
        )
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


#: What a run compares unless told otherwise.
DEFAULT_SERVERS = tuple(name for name in SERVERS if name != "kanal-metrics")


def run(
    repeats: int = 3, *, servers: tuple[str, ...] = DEFAULT_SERVERS, seconds: float = SECONDS
) -> list[Figure]:
    """Measure every figure for every server, ``repeats`` times; the figures with samples."""
    raise_fd_limit()
    wrk_path = ensure_wrk()
    cpus = Cpus.pick()
    log(
        f"servers {', '.join(servers)}; server CPU {cpus.server}, client CPU {cpus.client}; "
        f"{repeats} repeat(s) of {seconds:g} s loads"
    )
    rec = Recorder()
    for name in servers:
        for fig_name, unit, higher in FIGURES:
            rec.declare(fig_name, name, unit, higher)
    broken: set[str] = set()
    for repeat in range(repeats):
        # Rotate the order so that slow drifts of a shared machine do not favour one server.
        order = list(servers[repeat % len(servers) :] + servers[: repeat % len(servers)])
        measure_ceiling(rec, seconds, cpus)
        for name in order:
            if name in broken:
                continue
            try:
                measure_load(name, rec, wrk_path, seconds, cpus)
                measure_idle(name, rec, cpus)
            except (ServerFailed, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
                log(f"{name} failed in repeat {repeat + 1}: {exc}")
                if isinstance(exc, ServerFailed):
                    broken.add(name)  # it will not start next time either
    return list(rec.figures.values())


def main(argv: list[str] | None = None) -> int:
    """Command line: run the suite and print the table and JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m bench.server", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of each load")
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated subset of {', '.join(SERVERS)}",
    )
    args = parser.parse_args(argv)
    servers = tuple(s for s in args.servers.split(",") if s)
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    emit(run(args.repeats, servers=servers, seconds=args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
