"""A lean WebSocket load client for ``bench.server``, run in its own process (and CPU).

It drives ``websockets``' sans-I/O ``ClientProtocol`` from plain ``asyncio.Protocol``
callbacks on uvloop: no task and no queue per message, so one client core can saturate a
one-core server. Modes (each prints one JSON line on stdout):

* ``echo``: N connections, each sends a message, waits for its echo, sends the next (closed
  loop); after a warm-up, counts echoes for a fixed time and records every round trip.
  Output: ``{"phase": "measuring"}`` when the timed window opens, then
  ``{"messages", "seconds", "rate", "p50_ms", "p99_ms", "cpu_seconds"}`` when it closes.
* ``idle``: opens N connections (a bounded number of handshakes at a time), prints
  ``{"open": N}`` and keeps them open and silent until stdin is closed or says anything,
  then closes them.
* ``ceiling``: a trivial echo server (``websockets`` handshake, then precomputed reply frames)
  that the ``echo`` mode can run against to measure the client's own ceiling.

Run: ``python -m bench._wsclient echo --port P --connections 64 --seconds 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import cast

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

# Every wait is bounded: a stuck server must fail the figure, not hang the benchmark.
HANDSHAKE_TIMEOUT = 30.0
# Handshakes in flight at once when opening many idle connections (a burst of thousands
# would overflow the listen backlog of servers that accept slowly).
OPEN_CONCURRENCY = 100


def raise_fd_limit() -> None:
    """Raise the soft open-files limit to the hard one (thousands of sockets are needed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Connection(asyncio.Protocol):
    """One client WebSocket; calls ``on_message`` for every complete message received."""

    def __init__(self, uri: str, deflate: bool) -> None:
        extensions = [ClientPerMessageDeflateFactory()] if deflate else None
        self.ws = ClientProtocol(parse_uri(uri), extensions=extensions, max_size=None)
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.on_message: Callable[[Connection, bytes], None] = lambda conn, data: None
        # Send times of the messages awaiting their echo (echoes come back in order).
        self.sent_at: collections.deque[float] = collections.deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.ws.send_request(self.ws.connect())
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        data = self.ws.data_to_send()
        if data:
            self.transport.write(b"".join(data))

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if self.ws.handshake_exc is not None:
                    if not self.opened.done():
                        self.opened.set_exception(self.ws.handshake_exc)
                elif not self.opened.done():
                    self.opened.set_result(None)
            elif isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY):
                # The benchmark's messages fit one frame; fragmented ones are not expected.
                self.on_message(self, bytes(event.data))
        self._flush()

    def send_text(self, data: bytes) -> None:
        """Send one text message now."""
        self.ws.send_text(data)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        error = exc or ConnectionError("connection closed")
        if not self.opened.done():
            self.opened.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)


async def open_connection(port: int, deflate: bool) -> Connection:
    """Connect to 127.0.0.1:``port`` and complete the WebSocket handshake."""
    loop = asyncio.get_running_loop()
    uri = f"ws://127.0.0.1:{port}/"
    _, conn = await loop.create_connection(lambda: Connection(uri, deflate), "127.0.0.1", port)
    await asyncio.wait_for(conn.opened, HANDSHAKE_TIMEOUT)
    return conn


async def open_many(port: int, count: int, deflate: bool) -> list[Connection]:
    """Open ``count`` connections, at most ``OPEN_CONCURRENCY`` handshakes at a time."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one() -> Connection:
        async with gate:
            return await open_connection(port, deflate)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def close_all(conns: list[Connection]) -> None:
    """Close every connection with a close frame, then the socket, bounded in time."""
    for conn in conns:
        if conn.transport is not None and not conn.transport.is_closing():
            conn.ws.send_close(1000)
            conn._flush()
            conn.transport.close()
    pending = [c.closed for c in conns if not c.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=10)


async def echo(
    port: int,
    connections: int,
    seconds: float,
    warmup: float,
    size: int,
    deflate: bool,
    inflight: int = 1,
) -> None:
    """Closed-loop echo load; prints the rate and round-trip percentiles over ``seconds``.

    Each connection keeps ``inflight`` messages awaiting their echo: 1 is request/response;
    more keeps a server busy even when wake-up latency (a busy machine) would leave it idle.
    """
    payload = b"x" * size
    conns = await open_many(port, connections, deflate)
    rtts: list[float] = []
    recording = False
    running = True
    count = 0
    perf = time.perf_counter

    def on_message(conn: Connection, data: bytes) -> None:
        nonlocal count
        now = perf()
        sent = conn.sent_at.popleft()
        if recording:
            rtts.append(now - sent)
            count += 1
        if running:
            conn.sent_at.append(now)
            conn.send_text(payload)

    for conn in conns:
        conn.on_message = on_message
        for _ in range(inflight):
            conn.sent_at.append(perf())
            conn.send_text(payload)
    await asyncio.sleep(warmup)  # the warm-up is a duration, not a wait for an event
    # Tells the parent the window opens, so it can read the server's CPU time now.
    print(json.dumps({"phase": "measuring"}), flush=True)
    cpu0 = time.process_time()
    start = perf()
    recording = True
    await asyncio.sleep(seconds)
    recording = False
    elapsed = perf() - start
    cpu = time.process_time() - cpu0
    running = False
    rtts.sort()
    if not rtts:
        raise RuntimeError("no echo received")
    result = {
        "messages": count,
        "seconds": elapsed,
        "rate": count / elapsed,
        "p50_ms": rtts[len(rtts) // 2] * 1e3,
        "p99_ms": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] * 1e3,
        "cpu_seconds": cpu,
    }
    # Printed before closing, so the parent's CPU reading closes the window on time.
    print(json.dumps(result), flush=True)
    await close_all(conns)


async def idle(port: int, connections: int, deflate: bool) -> None:
    """Open connections, report, hold them until stdin says so (or closes), close them."""
    conns = await open_many(port, connections, deflate)
    lost = sum(1 for c in conns if c.closed.done())
    print(json.dumps({"open": connections - lost}), flush=True)
    loop = asyncio.get_running_loop()
    # Blocks in a thread: the parent writes a line (or exits) when it has measured.
    await loop.run_in_executor(None, sys.stdin.readline)
    await close_all(conns)


class CeilingServer(asyncio.Protocol):
    """Echoes fixed-size client frames with a precomputed reply: as cheap as a server gets."""

    def __init__(self, size: int) -> None:
        self.ws = ServerProtocol()
        self.size = size
        # A masked client frame of <= 125 bytes: 2 header bytes, 4 mask bytes, the payload.
        self.frame_len = 6 + size
        self.reply = bytes([0x81, size]) + b"x" * size
        self.upgraded = False
        self.pending = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.upgraded:
            self.ws.receive_data(data)
            for event in self.ws.events_received():
                if isinstance(event, Request):
                    self.ws.send_response(self.ws.accept(event))
                    self.transport.write(b"".join(self.ws.data_to_send()))
                    self.upgraded = True
            return
        self.pending += len(data)
        frames, self.pending = divmod(self.pending, self.frame_len)
        if frames:
            self.transport.write(self.reply * frames)


async def ceiling(port: int, size: int) -> None:
    """Serve ``CeilingServer`` on 127.0.0.1:``port`` until stdin closes."""
    if size > 125:
        raise ValueError(f"ceiling server handles messages of at most 125 bytes, not {size}")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: CeilingServer(size), "127.0.0.1", port)
    print(json.dumps({"listening": port}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    server.close()


def main(argv: list[str] | None = None) -> int:
    """Command line: ``echo``, ``idle`` or ``ceiling`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench._wsclient")
    parser.add_argument("mode", choices=["echo", "idle", "ceiling"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=64, help="message size in bytes")
    parser.add_argument("--inflight", type=int, default=1, help="messages in flight per connection")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    args = parser.parse_args(argv)
    raise_fd_limit()
    import uvloop

    if args.mode == "echo":
        uvloop.run(
            echo(
                args.port,
                args.connections,
                args.seconds,
                args.warmup,
                args.size,
                args.deflate,
                args.inflight,
            )
        )
    elif args.mode == "idle":
        uvloop.run(idle(args.port, args.connections, args.deflate))
    else:
        uvloop.run(ceiling(args.port, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
