"""End-to-end chat: kanal serve + its chat + its Redis layer vs Daphne + Channels + channels_redis.

Both servers run the same chat (a WebSocket consumer per client that joins its room's group,
greets the client, announces joins, and ``group_send``\\s every line it receives to the room,
the sender included) as ONE process on the same ``redis-server`` (started here on a free
port, flushed between runs), each with its default settings:

* ``kanal``: ``kanal serve examples.chat.app:application`` with
  ``KANAL_LAYER=redis://127.0.0.1:<port>/0``;
* ``daphne``: ``daphne bench.channels_chat.asgi:application`` (``bench/channels_chat/``: a
  minimal Django Channels project on channels_redis's ``RedisChannelLayer``);
* ``client-ceiling``: a trivial broadcast server (no layer, no framework, one precomputed
  frame written to every socket) that shows how much the load client itself can measure;
* ``kanal-memory`` (only with ``--impls``): kanal's chat on ``memory://``, a diagnostic that
  separates the Redis layer's cost from the consumer's and the server's.

The load client (``python -m bench.chat_e2e client``, its own process, pinned to the other
CPU when ``taskset`` exists) opens CLIENTS WebSockets in ONE room, waits until the join
notices have settled, then SENDERS of them send MESSAGES lines each, one every INTERVAL
seconds (staggered), each line carrying its sender, sequence number and send time. Every
client records every line it receives. Figures, per implementation:

* ``delivered``: broadcasts received / CLIENTS x SENDERS x MESSAGES, in % (drops show here;
  a client whose handshake failed, or a sender closed by the server, counts as missing);
* ``p50 delivery`` and ``p99 delivery``: send -> receipt at every client, in ms;
* ``wall``: first send -> last receipt, in s;
* ``server CPU``: the server process's CPU seconds over the same run.

Every wait is bounded (handshakes, settling, the whole run); a run that loses broadcasts
ends QUIET seconds after the last one arrived. Repeats rotate the order; medians.

Run ``python -m bench chat_e2e [--repeats N]`` or ``python -m bench.chat_e2e [--repeats N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any, cast

from websockets.exceptions import InvalidHandshake
from websockets.protocol import State

from bench._common import Figure, emit, run_client, settle
from bench._wsclient import Connection, raise_fd_limit
from bench.server import ROOT, Cpus, ServerFailed, _stop, _wait_ready, cpu_seconds, free_port

__all__ = ["run"]

SUITE = "chat.e2e"
CLIENTS = 200
SENDERS = 10
MESSAGES = 100
INTERVAL = 0.1  # seconds between two lines of one sender: 100 lines/s, 20,000 frames/s out
ROOM = "bench"
IMPLS = ("kanal", "daphne", "client-ceiling")
# Not run by default: kanal's chat on its in-memory layer, to tell the layer's share of the
# cost from the consumer's and the server's.
DIAGNOSTIC_IMPLS = ("kanal-memory",)
# Bounds on every wait: a server that hangs or loses messages fails or shows it, never hangs.
HANDSHAKE_TIMEOUT = 30.0
OPEN_CONCURRENCY = 50
SETTLE_QUIET = 1.0  # join notices have settled when none arrived for this long
SETTLE_LIMIT = 60.0
# After the last send, give up when no broadcast arrived for this long (counted from the
# later of the last send and the last arrival: a backlogged server may take seconds to
# deliver the first line).
QUIET = 10.0
RUN_LIMIT = 180.0
START_TIMEOUT = 30.0

# The line a sender sends: "m <sender> <seq> <perf_counter_ns at send>".
_LINE = re.compile(rb'"text": ?"m (\d+) (\d+) (\d+)"')


def log(text: str) -> None:
    """Progress on stderr, so stdout stays the table and the JSON lines."""
    print(f"[bench.chat_e2e] {text}", file=sys.stderr, flush=True)


# -- the load client (its own process) -----------------------------------------------------


class ChatConnection(Connection):
    """A client WebSocket with an Origin header (the chats refuse other pages' sockets)."""

    def __init__(self, uri: str, origin: str) -> None:
        super().__init__(uri, deflate=False)
        from websockets.client import ClientProtocol
        from websockets.typing import Origin
        from websockets.uri import parse_uri

        self.ws = ClientProtocol(parse_uri(uri), origin=Origin(origin), max_size=None)


async def _open(port: int, index: int) -> ChatConnection:
    loop = asyncio.get_running_loop()
    uri = f"ws://127.0.0.1:{port}/ws/chat/{ROOM}/?name=c{index}"
    origin = f"http://127.0.0.1:{port}"
    _, conn = await loop.create_connection(lambda: ChatConnection(uri, origin), "127.0.0.1", port)
    await asyncio.wait_for(conn.opened, HANDSHAKE_TIMEOUT)
    return conn


async def client(port: int, clients: int, senders: int, messages: int, interval: float) -> None:
    """Drive the room; print one JSON line with the counts and latencies."""
    perf_ns = time.perf_counter_ns
    latencies: list[int] = []
    seen: set[tuple[int, int, int]] = set()
    stats = {"setup": 0, "duplicates": 0, "errors": 0, "senders_lost": 0}
    last_arrival = time.monotonic()
    expected = clients * senders * messages
    all_in = asyncio.Event()
    last_line_ns = [0]
    arrived = asyncio.Event()  # set by every message: the join notices' settling waits on it

    def on_message(conn: Connection, data: bytes) -> None:
        nonlocal last_arrival
        now = perf_ns()
        last_arrival = time.monotonic()
        arrived.set()
        match = _LINE.search(data)
        if match is None:
            if b'"error"' in data:
                stats["errors"] += 1
            stats["setup"] += 1
            return
        key = (cast(ChatConnection, conn).index, int(match[1]), int(match[2]))
        if key in seen:
            stats["duplicates"] += 1
            return
        seen.add(key)
        last_line_ns[0] = now
        latencies.append(now - int(match[3]))
        if len(seen) == expected:
            all_in.set()

    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(index: int) -> ChatConnection | None:
        async with gate:
            try:
                conn = await _open(port, index)
            except (OSError, TimeoutError, InvalidHandshake):
                return None  # refused or dropped: it counts as a client that got nothing
            conn.index = index  # type: ignore[attr-defined]
            conn.on_message = on_message
            return conn

    opened = await asyncio.gather(*(one(i) for i in range(clients)))
    conns = [conn for conn in opened if conn is not None]
    if len(conns) < senders:
        raise RuntimeError(f"only {len(conns)} of {clients} WebSockets opened")
    await settle(arrived, SETTLE_QUIET, SETTLE_LIMIT)
    setup_messages = stats["setup"]
    cpu0 = time.process_time()
    start_ns = perf_ns()

    async def sender(number: int, conn: ChatConnection) -> None:
        # Staggered, then at a fixed pace from a fixed schedule (no drift when a tick is late).
        offset = interval * number / senders
        for seq in range(messages):
            delay = start_ns / 1e9 + offset + seq * interval - perf_ns() / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            if conn.closed.done() or conn.ws.state is not State.OPEN:
                stats["senders_lost"] += 1  # closed by the server: its lines stay unsent
                return
            text = f"m {number} {seq} {perf_ns()}"
            conn.send_text(json.dumps({"text": text}).encode())

    step = len(conns) // senders
    await asyncio.gather(*(sender(n, conns[n * step]) for n in range(senders)))
    sent_ns = perf_ns()
    deadline = time.monotonic() + RUN_LIMIT
    sent_at = time.monotonic()
    while not all_in.is_set():
        now = time.monotonic()
        if now > deadline or now - max(last_arrival, sent_at) > QUIET:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 0.25)
    # Wall time ends at the last broadcast's arrival, not when the quiet period ran out.
    wall = max(sent_ns, last_line_ns[0]) - start_ns
    cpu = time.process_time() - cpu0
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] / 1e6

    lost = sum(1 for c in conns if c.closed.done())
    result = {
        "delivered": len(seen),
        "expected": expected,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] / 1e6 if latencies else float("nan"),
        "wall_s": wall / 1e9,
        "send_s": (sent_ns - start_ns) / 1e9,
        "client_cpu_s": cpu,
        "setup_messages": setup_messages,
        "duplicates": stats["duplicates"],
        "errors": stats["errors"],
        "closed_by_server": lost,
        "failed_handshakes": clients - len(conns),
        "senders_lost": stats["senders_lost"],
    }
    print(json.dumps(result), flush=True)
    for conn in conns:
        if conn.transport is not None and not conn.transport.is_closing():
            conn.ws.send_close(1000)
            conn._flush()
            conn.transport.close()
    pending = [c.closed for c in conns if not c.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=10)


# -- the client's ceiling: a broadcast server with nothing in it ---------------------------


class _CeilingConnection(asyncio.Protocol):
    """One socket of the ceiling server: handshake with websockets, then raw frames."""

    def __init__(self, room: set[_CeilingConnection]) -> None:
        from websockets.server import ServerProtocol

        self.ws = ServerProtocol(max_size=None)
        self.room = room
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Frame, Opcode
        from websockets.http11 import Request

        assert self.transport is not None
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self.ws.send_response(self.ws.accept(event))
                self.room.add(self)
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                line = json.loads(event.data)
                body = {"kind": "message", "name": "c", "text": line["text"], "time": time.time()}
                # One frame built once and written to every socket: the cheapest broadcast.
                frame = Frame(Opcode.TEXT, json.dumps(body).encode()).serialize(mask=False)
                for member in self.room:
                    if member.transport is not None:
                        member.transport.write(frame)
        for chunk in self.ws.data_to_send():
            self.transport.write(chunk)

    def connection_lost(self, exc: Exception | None) -> None:
        self.room.discard(self)


async def ceiling(port: int, host: str = "127.0.0.1") -> None:
    """Serve the ceiling broadcast server on ``host``:``port`` until killed."""
    room: set[_CeilingConnection] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _CeilingConnection(room), host, port)
    async with server:
        await server.serve_forever()


# -- the orchestration ---------------------------------------------------------------------


def _command(impl: str, port: int) -> list[str]:
    if impl in ("kanal", "kanal-memory", "kanal-memory-metrics"):
        # kanal-memory-metrics: the same with --metrics on (for bench.fanout's cost figure).
        metrics = ["--metrics", str(free_port())] if impl.endswith("-metrics") else []
        return [
            sys.executable, "-c", "import sys; from kanal.cli import main; sys.exit(main())",
            "serve", "examples.chat.app:application", "--host", "127.0.0.1", "--port", str(port),
            *metrics,
        ]  # fmt: skip
    if impl == "daphne":
        return [
            sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0",
            "bench.channels_chat.asgi:application",
        ]  # fmt: skip
    if impl == "client-ceiling":
        return [sys.executable, "-m", "bench.chat_e2e", "ceiling", "--port", str(port)]
    raise ValueError(f"unknown implementation {impl!r}; choose from {', '.join(IMPLS)}")


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """True once something accepts TCP on ``port`` (the ceiling server has no HTTP)."""
    import socket

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        time.sleep(0.05)  # a process we do not control: poll, bounded by the deadline
    return False


@contextlib.contextmanager
def serve(impl: str, redis_url: str, cpus: Cpus) -> Iterator[tuple[int, int, Any]]:
    """Start ``impl`` on a free port; yields (port, pid, log file); stops it afterwards."""
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        KANAL_LAYER="memory://" if impl.startswith("kanal-memory") else redis_url,
        CHAT_REDIS_URL=redis_url,
    )
    command = cpus.pin(cpus.server, _command(impl, port))
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            ready = (
                _wait_listening(port, proc) if impl == "client-ceiling" else _wait_ready(port, proc)
            )
            if not ready:
                output.seek(0)
                tail = output.read().decode(errors="replace")[-2000:]
                raise ServerFailed(f"{impl} did not serve ({' '.join(command)}):\n{tail}")
            yield port, proc.pid, output
        finally:
            _stop(proc)


def drive(port: int, cpus: Cpus, args: argparse.Namespace) -> dict[str, Any]:
    """Run the load client against ``port``; its JSON result."""
    command = cpus.pin(
        cpus.client,
        [
            sys.executable, "-m", "bench.chat_e2e", "client", "--port", str(port),
            "--clients", str(args.clients), "--senders", str(args.senders),
            "--messages", str(args.messages), "--interval", str(args.interval),
        ],
    )  # fmt: skip
    limit = HANDSHAKE_TIMEOUT + SETTLE_LIMIT + args.messages * args.interval + RUN_LIMIT + 30
    return run_client(command, ROOT, limit, "chat client")


def _flush(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.flushall()
    finally:
        client.close()


FIGURES = [
    ("delivered", "%", True),
    ("p50 delivery", "ms", False),
    ("p99 delivery", "ms", False),
    ("wall", "s", False),
    ("server CPU", "CPU-s", False),
]


def measure(impl: str, redis_url: str, cpus: Cpus, args: argparse.Namespace) -> dict[str, Any]:
    """One run of ``impl`` on a fresh server process and a flushed Redis."""
    _flush(redis_url)
    with serve(impl, redis_url, cpus) as (port, pid, output):
        cpu0 = cpu_seconds(pid)
        result = drive(port, cpus, args)
        result["server_cpu_s"] = cpu_seconds(pid) - cpu0
        output.seek(0)
        server_log = output.read().decode(errors="replace")
    # What the server said about drops or errors (kanal's layer logs every drop it counts).
    noisy = [
        line for line in server_log.splitlines()
        if re.search(r"drop|full|error|exception|traceback", line, re.I)
    ]  # fmt: skip
    # kanal's drop log: one line for the first drop, then "dropped N more" every 5 s.
    result["server_logged_drops"] = len(re.findall(r"dropped a message", server_log)) + sum(
        int(n) for n in re.findall(r"dropped (\d+) more", server_log)
    )
    result["server_log_lines"] = len(server_log.splitlines())
    result["server_log_alerts"] = noisy[:3]
    return result


def run(repeats: int = 3, *, args: argparse.Namespace | None = None) -> list[Figure]:
    """Measure every figure for every implementation, ``repeats`` times."""
    from kanal.testing import RedisServer

    args = args or _parser().parse_args(["--repeats", str(repeats)])
    raise_fd_limit()
    cpus = Cpus.pick()
    impls = tuple(i for i in args.impls.split(",") if i)
    figures = {
        (name, impl): Figure(SUITE, name, impl, unit, higher_is_better=higher)
        for impl in impls
        for name, unit, higher in FIGURES
    }
    log(
        f"{args.clients} clients in one room, {args.senders} senders x {args.messages} lines "
        f"every {args.interval * 1e3:g} ms; server CPU {cpus.server}, client CPU {cpus.client}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    with RedisServer() as redis_server:
        for repeat in range(repeats):
            order = impls[repeat % len(impls) :] + impls[: repeat % len(impls)]
            for impl in order:
                try:
                    r = measure(impl, redis_server.url, cpus, args)
                except (ServerFailed, RuntimeError, subprocess.TimeoutExpired) as exc:
                    log(f"{impl} failed in repeat {repeat + 1}: {exc}")
                    continue
                figures[("delivered", impl)].samples.append(100 * r["delivered"] / r["expected"])
                figures[("p50 delivery", impl)].samples.append(r["p50_ms"])
                figures[("p99 delivery", impl)].samples.append(r["p99_ms"])
                figures[("wall", impl)].samples.append(r["wall_s"])
                figures[("server CPU", impl)].samples.append(r["server_cpu_s"])
                log(f"{impl} (repeat {repeat + 1}): {json.dumps(r)}")
    return list(figures.values())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.chat_e2e", description=__doc__)
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "client", "ceiling"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--impls", default=",".join(IMPLS), help=f"subset of {','.join(IMPLS + DIAGNOSTIC_IMPLS)}"
    )
    parser.add_argument("--port", type=int, help="(client, ceiling) the server's port")
    parser.add_argument("--host", default="127.0.0.1", help="(ceiling) the address to listen on")
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--senders", type=int, default=SENDERS)
    parser.add_argument("--messages", type=int, default=MESSAGES, help="lines per sender")
    parser.add_argument("--interval", type=float, default=INTERVAL, help="seconds between lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line: the benchmark (default), or its ``client`` / ``ceiling`` processes."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.mode in ("client", "ceiling") and args.port is None:
        parser.error(f"{args.mode} needs --port")
    if args.senders < 1 or args.senders > args.clients:
        parser.error(f"--senders must be between 1 and --clients, not {args.senders}")
    if args.mode == "client":
        import uvloop

        raise_fd_limit()
        uvloop.run(client(args.port, args.clients, args.senders, args.messages, args.interval))
    elif args.mode == "ceiling":
        import uvloop

        uvloop.run(ceiling(args.port, args.host))
    else:
        unknown = [i for i in args.impls.split(",") if i and i not in IMPLS + DIAGNOSTIC_IMPLS]
        if unknown:
            parser.error(f"unknown implementation(s) {', '.join(unknown)}; choose from {IMPLS}")
        emit(run(args.repeats, args=args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
