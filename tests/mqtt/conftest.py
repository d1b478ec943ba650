"""Fixtures for the MQTT tests: a real Mosquitto per test, and servers run in a task."""

# Helpers take timeouts as the communicators do.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import aiomqtt
import pytest

from kanal.mqtt import MqttConfig, MqttServer
from kanal.testing import MosquittoServer
from kanal.typing import ASGIApp

TIMEOUT = 10.0


@pytest.fixture
def broker() -> Iterator[MosquittoServer]:
    """A fresh Mosquitto; unlike the plugin's fixture it fails, not skips, when missing."""
    with MosquittoServer() as server:
        yield server


@contextlib.asynccontextmanager
async def running(
    application: ASGIApp,
    broker: MosquittoServer,
    subscribed: Sequence[str] = ("in/#",),
    **options: Any,
) -> AsyncIterator[MqttServer]:
    """An MqttServer for ``application`` in a task, connected and subscribed to the topic
    filters ``subscribed`` (what the application subscribes to on connect); stopped
    gracefully after."""
    options.setdefault("reconnect_min", 0.05)
    options.setdefault("reconnect_max", 0.5)
    server = MqttServer(application, MqttConfig(broker=broker.url, **options))
    task = asyncio.create_task(server.run())
    try:
        async with asyncio.timeout(TIMEOUT):
            done, _ = await asyncio.wait(
                {task, asyncio.ensure_future(server.wait_connected())},
                return_when=asyncio.FIRST_COMPLETED,
            )
            if task in done:
                task.result()
            for topic in subscribed:
                await server.wait_subscribed(topic)
        yield server
    finally:
        server.stop()
        async with asyncio.timeout(TIMEOUT + server.config.shutdown_timeout):
            await task


@contextlib.asynccontextmanager
async def client(
    broker: MosquittoServer, identifier: str = "test-client", **options: Any
) -> AsyncIterator[aiomqtt.Client]:
    """A plain aiomqtt client of the broker, for the device's side of a test."""
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=identifier, **options
    ) as connection:
        yield connection


async def next_messages(
    connection: aiomqtt.Client, count: int, timeout: float = TIMEOUT
) -> list[aiomqtt.Message]:
    """The next ``count`` messages the client receives."""
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(timeout):
        async for message in connection.messages:
            got.append(message)
            if len(got) == count:
                break
    return got


class Gate:
    """Holds handlers until opened; records what reached them, with an event per arrival."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.seen: list[bytes] = []
        self.arrived = asyncio.Event()

    async def wait_seen(self, count: int, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while len(self.seen) < count:
                self.arrived.clear()
                await self.arrived.wait()

    def record(self, payload: bytes) -> None:
        self.seen.append(payload)
        self.arrived.set()


Factory = Callable[..., ASGIApp]


class LogWaiter(logging.Handler):
    """Sets an event when a log record containing ``text`` is emitted on ``logger``."""

    def __init__(self, logger: str, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()
        self._logger = logging.getLogger(logger)

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()

    async def wait(self, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            await self.seen.wait()

    def __enter__(self) -> LogWaiter:
        self._logger.addHandler(self)
        if self._logger.getEffectiveLevel() > logging.WARNING:
            self._logger.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
