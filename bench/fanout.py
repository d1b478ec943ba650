"""Fan-out: one room of 1,000 and of 10,000 WebSockets, one sender, every line to everyone.

The question is how close a server's broadcast gets to the physical limit: a server that
frames each line once and writes it to every socket. Implementations, each ONE process on
its own CPU (the load client gets the other):

* ``kanal``: ``kanal serve examples.chat.app:application`` on ``memory://``; its room lines
  are direct broadcasts (docs/direct.md), written by the server, framed once;
* ``frame-once``: the limit: ``bench.chat_e2e``'s ceiling server, which has no layer and no
  framework and writes one precomputed frame per line to every socket;
* ``daphne``: Daphne + Django Channels + channels_redis (``bench/channels_chat``'s
  ``ws/fanout/`` route: join the group, ``group_send`` every line, no join notices), on a
  ``redis-server`` started here;
* ``kanal-redis`` (only with ``--impls``): kanal's chat on that Redis;
* ``kanal-metrics`` (only with ``--impls``): ``kanal`` with ``--metrics`` on, for what
  metrics cost on the broadcast path (docs/operations.md).

The load client (``python -m bench.fanout client``, its own process) is cheap per frame: it
does the handshake by hand and then parses the server's frames with a few slices and one
regex per line, no WebSocket library per frame (about 2 us a frame, measured here against
the ``websockets`` protocol's 15 us), and answers pings. It opens N sockets in one room,
waits until join notices have settled, then one of them sends LINES lines, one every
N / RATE seconds, so that RATE frames/s are offered whatever N is (100,000 by default: the
figure of the issue that asked for this). Every line carries its send time.

Figures per implementation and room size: ``frames/s`` delivered (line receipts over first
send -> last receipt), ``p50`` and ``p99`` send -> receipt in ms, ``delivered`` in % (what
was not delivered was lost or cut; the server's own counts, such as kanal's slow-reader
closes, show in its log).

Run ``python -m bench fanout [--repeats N]`` or ``python -m bench.fanout --sizes 1000
--repeats 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import struct
import subprocess
import sys
import time
from typing import Any, cast

from bench._common import Figure, emit, run_client, settle
from bench._wsclient import raise_fd_limit
from bench.chat_e2e import _flush, serve
from bench.server import ROOT, Cpus, ServerFailed, cpu_seconds

__all__ = ["run"]

SUITE = "fanout"
SIZES = (1000, 10000)
IMPLS = ("kanal", "frame-once", "daphne")
DIAGNOSTIC_IMPLS = ("kanal-redis", "kanal-metrics")
RATE = 100_000  # frames/s offered: N sockets x one line every N / RATE seconds
SEND_SECONDS = 3.0  # how long the sender sends
# Bounds on every wait: a server that hangs fails the figure, never the benchmark.
HANDSHAKE_TIMEOUT = 60.0
OPEN_CONCURRENCY = 100
SETTLE_QUIET = 1.0
SETTLE_LIMIT = 120.0
QUIET = 10.0
RUN_LIMIT = 180.0

# chat_e2e's server names for the same processes.
_SERVED_AS = {
    "kanal": "kanal-memory",
    "kanal-redis": "kanal",
    "kanal-metrics": "kanal-memory-metrics",
    "frame-once": "client-ceiling",
    "daphne": "daphne",
}
# The line the sender sends and every server echoes inside its JSON: "m 0 <seq> <ns>".
_LINE = re.compile(rb'"text": ?"m \d+ (\d+) (\d+)"')
_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def log(text: str) -> None:
    """Progress on stderr, so stdout stays the table and the JSON lines."""
    print(f"[bench.fanout] {text}", file=sys.stderr, flush=True)


# -- the load client (its own process) -----------------------------------------------------


def _client_frame(opcode: int, payload: bytes) -> bytes:
    # A client frame must be masked (RFC 6455 §5.3); a zero key leaves the payload as is.
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    return head + b"\0\0\0\0" + payload


class FastConnection(asyncio.Protocol):
    """A client WebSocket that parses frames by hand: the load client's per-frame cost."""

    def __init__(self, request: bytes, on_line: Any) -> None:
        self.request = request
        self.on_line = on_line
        self.buffer = b""
        self.open = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.frames = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(buffer[:40].decode("latin-1")))
                return
            self.open = True
            self.opened.set_result(None)
            buffer = buffer[end + 4 :]
        position = 0
        size = len(buffer)
        on_line = self.on_line
        while size - position >= 2:
            first = buffer[position]
            length = buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = (buffer[position + 2] << 8) | buffer[position + 3]
                start = position + 4
            elif length == 127:
                if size - position < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, position + 2)
                start = position + 10
            end = start + length
            if end > size:
                break
            opcode = first & 0x0F
            if opcode == 1:
                self.frames += 1
                on_line(buffer[start:end])
            elif opcode == 9 and self.transport is not None:  # ping: pong
                self.transport.write(_client_frame(0xA, buffer[start:end]))
            elif opcode == 8 and self.transport is not None:
                self.transport.close()
            position = end
        self.buffer = buffer[position:] if position < size else b""

    def send_text(self, payload: bytes) -> None:
        """Send one text message."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_client_frame(0x1, payload))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed"))
        if not self.closed.done():
            self.closed.set_result(None)


async def client(
    targets: list[tuple[str, int]], path: str, clients: int, lines: int, interval: float
) -> None:
    """Open the room, send the lines, print one JSON line with counts and latencies.

    The sockets are spread over ``targets`` (host, port) in turn; the sender is the first
    socket, on the first target. With several targets the result also gives each target's
    p50 and p99, since the others hear the line only through the channel layer.
    """
    perf_ns = time.perf_counter_ns
    latencies: list[int] = []
    by_target: list[list[int]] = [[] for _ in targets]
    received = [0]
    last_line_ns = [0]
    last_arrival = [time.monotonic()]
    other = [0]
    expected = clients * lines
    all_in = asyncio.Event()
    arrived = asyncio.Event()

    def receiver(bucket: list[int]) -> Any:
        def on_line(payload: bytes) -> None:
            now = perf_ns()
            last_arrival[0] = time.monotonic()
            match = _LINE.search(payload)
            if match is None:
                other[0] += 1
                arrived.set()
                return
            received[0] += 1
            last_line_ns[0] = now
            latency = now - int(match[2])
            latencies.append(latency)
            bucket.append(latency)
            if received[0] >= expected:
                all_in.set()

        return on_line

    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(index: int) -> FastConnection | None:
        host, port = targets[index % len(targets)]
        on_line = receiver(by_target[index % len(targets)])
        request = (
            f"GET {path}?name=c{index} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {_KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://{host}:{port}\r\n\r\n"
        ).encode()
        async with gate:
            try:
                _, conn = await loop.create_connection(
                    lambda: FastConnection(request, on_line), host, port
                )
                await asyncio.wait_for(conn.opened, HANDSHAKE_TIMEOUT)
            except (OSError, TimeoutError):
                return None
            return conn

    opened_at = time.monotonic()
    opened = await asyncio.gather(*(one(i) for i in range(clients)))
    conns = [c for c in opened if c is not None]
    open_s = time.monotonic() - opened_at
    if not conns:
        raise RuntimeError(f"none of {clients} WebSockets opened")
    await settle(arrived, SETTLE_QUIET, SETTLE_LIMIT)
    setup_frames = other[0]
    cpu0 = time.process_time()
    start_ns = perf_ns()
    sender = conns[0]
    for seq in range(lines):
        delay = start_ns / 1e9 + seq * interval - perf_ns() / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        sender.send_text(json.dumps({"text": f"m 0 {seq} {perf_ns()}"}).encode())
    sent_ns = perf_ns()
    sent_at = time.monotonic()
    deadline = sent_at + RUN_LIMIT
    while not all_in.is_set():
        now = time.monotonic()
        if now > deadline or now - max(last_arrival[0], sent_at) > QUIET:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 0.25)
    wall_ns = max(sent_ns, last_line_ns[0]) - start_ns
    latencies.sort()

    def pct(p: float, values: list[int] = latencies) -> float:
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(len(values) * p))] / 1e6

    for bucket in by_target:
        bucket.sort()

    result = {
        "delivered": received[0],
        "expected": expected,
        "frames_per_s": received[0] / (wall_ns / 1e9) if wall_ns else 0.0,
        "offered_per_s": clients / interval,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] / 1e6 if latencies else float("nan"),
        "wall_s": wall_ns / 1e9,
        "open_s": open_s,
        "client_cpu_s": time.process_time() - cpu0,
        "setup_frames": setup_frames,
        "failed_handshakes": clients - len(conns),
        "closed_by_server": sum(1 for c in conns if c.closed.done()),
    }
    if len(targets) > 1:
        result["p50_ms_by_target"] = [pct(0.5, bucket) for bucket in by_target]
        result["p99_ms_by_target"] = [pct(0.99, bucket) for bucket in by_target]
    print(json.dumps(result), flush=True)
    for conn in conns:
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.write(_client_frame(0x8, struct.pack("!H", 1000)))
            conn.transport.close()
    pending = [c.closed for c in conns if not c.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=10)


# -- the orchestration ---------------------------------------------------------------------


def drive(port: int, impl: str, cpus: Cpus, clients: int, lines: int, interval: float) -> Any:
    """Run the load client against ``port``; its JSON result."""
    path = "/ws/fanout/bench/" if impl == "daphne" else "/ws/chat/bench/"
    command = cpus.pin(
        cpus.client,
        [
            sys.executable, "-m", "bench.fanout", "client", "--port", str(port),
            "--path", path, "--clients", str(clients), "--lines", str(lines),
            "--interval", str(interval),
        ],
    )  # fmt: skip
    limit = HANDSHAKE_TIMEOUT * 4 + SETTLE_LIMIT + lines * interval + RUN_LIMIT + 30
    return run_client(command, ROOT, limit, "fanout client")


FIGURES = [
    ("frames/s", "frames/s", True),
    ("p50", "ms", False),
    ("p99", "ms", False),
    ("delivered", "%", True),
]


def run(repeats: int = 3, *, args: argparse.Namespace | None = None) -> list[Figure]:
    """Measure every figure for every implementation and room size, ``repeats`` times."""
    from kanal.testing import RedisServer

    args = args or _parser().parse_args(["--repeats", str(repeats)])
    raise_fd_limit()
    cpus = Cpus.pick()
    impls = tuple(i for i in args.impls.split(",") if i)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    figures: dict[tuple[str, str], Figure] = {}
    for size in sizes:
        for impl in impls:
            for name, unit, higher in FIGURES:
                key = (f"{size} sockets {name}", impl)
                figures[key] = Figure(SUITE, key[0], impl, unit, higher_is_better=higher)
    log(
        f"rooms of {sizes} sockets, {args.rate:,} frames/s offered for {args.seconds:g} s; "
        f"server CPU {cpus.server}, client CPU {cpus.client}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    with RedisServer() as redis_server:
        for repeat in range(repeats):
            order = impls[repeat % len(impls) :] + impls[: repeat % len(impls)]
            for size in sizes:
                interval = size / args.rate
                lines = max(1, int(args.seconds / interval))
                for impl in order:
                    _flush(redis_server.url)
                    try:
                        with serve(_SERVED_AS[impl], redis_server.url, cpus) as (port, pid, _):
                            cpu0 = cpu_seconds(pid)
                            r = drive(port, impl, cpus, size, lines, interval)
                            r["server_cpu_s"] = cpu_seconds(pid) - cpu0
                    except (ServerFailed, RuntimeError, subprocess.TimeoutExpired) as exc:
                        log(f"{impl} with {size} sockets failed in repeat {repeat + 1}: {exc}")
                        continue
                    prefix = f"{size} sockets "
                    figures[(prefix + "frames/s", impl)].samples.append(r["frames_per_s"])
                    figures[(prefix + "p50", impl)].samples.append(r["p50_ms"])
                    figures[(prefix + "p99", impl)].samples.append(r["p99_ms"])
                    figures[(prefix + "delivered", impl)].samples.append(
                        100 * r["delivered"] / r["expected"]
                    )
                    log(f"{impl}, {size} sockets (repeat {repeat + 1}): {json.dumps(r)}")
    return list(figures.values())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "client"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--impls", default=",".join(IMPLS), help=f"subset of {','.join(IMPLS + DIAGNOSTIC_IMPLS)}"
    )
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="room sizes")
    parser.add_argument("--rate", type=int, default=RATE, help="frames/s offered")
    parser.add_argument("--seconds", type=float, default=SEND_SECONDS, help="sending time")
    parser.add_argument("--port", type=int, help="(client) the server's port on 127.0.0.1")
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        help="(client) HOST:PORT of a server, repeatable: the sockets are spread over them",
    )
    parser.add_argument("--path", default="/ws/chat/bench/", help="(client) the room's path")
    parser.add_argument("--clients", type=int, default=1000, help="(client) sockets")
    parser.add_argument("--lines", type=int, default=100, help="(client) lines sent")
    parser.add_argument("--interval", type=float, default=0.01, help="(client) seconds apart")
    return parser


def _target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    """Command line: the benchmark (default), or its ``client`` process."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.mode == "client":
        targets = [_target(t) for t in args.target]
        if args.port is not None:
            targets.insert(0, ("127.0.0.1", args.port))
        if not targets:
            parser.error("client needs --port or --target")
        raise_fd_limit()
        import uvloop

        uvloop.run(client(targets, args.path, args.clients, args.lines, args.interval))
        return 0
    emit(run(args.repeats, args=args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
