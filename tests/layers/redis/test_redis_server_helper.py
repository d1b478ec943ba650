"""kanal.testing.RedisServer itself: its log is read for as long as the server runs."""

from __future__ import annotations

import socket

import pytest

from kanal.exceptions import KanalError
from kanal.testing import RedisServer

pytestmark = pytest.mark.redis


def _ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64)


def test_a_chatty_server_never_blocks_on_its_log() -> None:
    # Verbose logging writes two lines per client connection: far more than a pipe holds
    # (64 KiB) after 2,000 connections. A log nobody reads would stall the server.
    with RedisServer(args=["--loglevel", "verbose"]) as server:
        for _ in range(2_000):
            assert _ping(server.port) == b"+PONG\r\n"
        assert "Accepted" in server.wait_for_log("Accepted", timeout=5)


def test_wait_for_log_reports_the_tail_when_the_text_never_comes() -> None:
    with RedisServer() as server:
        with pytest.raises(KanalError, match="did not log 'no such line'") as caught:
            server.wait_for_log("no such line", timeout=0.2)
        assert "Ready to accept connections" in str(caught.value)
        server.restart()
        assert _ping(server.port) == b"+PONG\r\n"
