"""Fixtures for server tests: a real server on a free loopback port, raw socket clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from kanal.server import Config, Server
from kanal.server._flow import PAUSE_APP, PAUSE_HANDSHAKE, PAUSE_PEER, FlowControl

Start = Callable[..., Awaitable[Server]]


@pytest.fixture
async def serve() -> AsyncIterator[Start]:
    """``await serve(app, **config)`` starts a server in this loop; stopped after the test."""
    servers: list[Server] = []

    async def start(app: Any, **options: Any) -> Server:
        options.setdefault("timeout_graceful_shutdown", 2.0)
        server = Server(Config(app=app, host="127.0.0.1", port=0, **options))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.shutdown()


class RawClient:
    """A plain TCP client for requests no HTTP library would send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_response(self, wait: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        """Read one response with a Content-Length or chunked body (or until close)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), wait)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await asyncio.wait_for(
                self.reader.readexactly(int(headers["content-length"])), wait
            )
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        elif status in (100, 101, 204, 304):
            body = b""
        else:
            body = await asyncio.wait_for(self.reader.read(), wait)
        return status, headers, body

    async def read_all(self, wait: float = 5.0) -> bytes:
        """Everything until the server closes the connection."""
        return await asyncio.wait_for(self.reader.read(), wait)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[int], Awaitable[RawClient]]]:
    """``await raw(port)`` opens a raw TCP client; closed after the test."""
    clients: list[RawClient] = []

    async def connect(port: int) -> RawClient:
        client = await RawClient.connect(port)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


class ReadPauses:
    """Tells a test when a connection paused reading, and for which reason (``PAUSE_*``).

    The server pauses reading when a budget is reached; a test waits for that moment (with
    a timeout) instead of guessing how long it takes, then measures what the server holds.
    """

    def __init__(self) -> None:
        self.events = {
            reason: asyncio.Event() for reason in (PAUSE_APP, PAUSE_PEER, PAUSE_HANDSHAKE)
        }

    async def wait(self, reason: int) -> None:
        """Until a connection paused reading for ``reason`` (30 s at most)."""
        await asyncio.wait_for(self.events[reason].wait(), 30)


@pytest.fixture
def read_pauses(monkeypatch: pytest.MonkeyPatch) -> ReadPauses:
    """Watches every connection's ``FlowControl.pause_reading`` (it still pauses)."""
    watch = ReadPauses()
    original = FlowControl.pause_reading

    def pause_reading(self: FlowControl, reason: int) -> bool:
        paused = original(self, reason)
        watch.events[reason].set()
        return paused

    monkeypatch.setattr(FlowControl, "pause_reading", pause_reading)
    return watch
