"""Fixtures of the bridge tests: a memory layer, real servers running the bridge, workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from tests.bridge.apps import make_app

from kanal.bridge import BridgeApp, BridgeWorker
from kanal.layers import InMemoryChannelLayer
from kanal.testing import LiveServer
from kanal.typing import ASGIApp

StartServer = Callable[..., Awaitable[LiveServer]]
StartWorker = Callable[..., Awaitable[tuple[BridgeWorker, "asyncio.Task[None]"]]]


@pytest.fixture
async def layer() -> AsyncIterator[InMemoryChannelLayer]:
    layer = InMemoryChannelLayer(capacity=1000)
    yield layer
    await layer.close()


@pytest.fixture
async def start_server(layer: InMemoryChannelLayer) -> AsyncIterator[StartServer]:
    """``await start_server(**bridge_options)``: a real server on a free port, running
    ``BridgeApp`` (wrapped by ``wrap`` if given); stopped after the test."""
    servers: list[LiveServer] = []

    async def start(wrap: Callable[[ASGIApp], ASGIApp] | None = None, **options: Any) -> LiveServer:
        options.setdefault("attach_timeout", 0.5)
        app: ASGIApp = BridgeApp(layer, **options)
        server = LiveServer(app if wrap is None else wrap(app), lifespan="off")
        servers.append(server)
        return await server.start()

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(start_server: StartServer) -> LiveServer:
    """A real server running the bridge with the default options (a short attach timeout)."""
    return await start_server()


@pytest.fixture
async def start_worker(layer: InMemoryChannelLayer) -> AsyncIterator[StartWorker]:
    """``await start_worker(**options)``: a running ``BridgeWorker`` on the test apps, and
    its task; any still running after the test is stopped."""
    running: list[tuple[BridgeWorker, asyncio.Task[None]]] = []

    async def start(**options: Any) -> tuple[BridgeWorker, asyncio.Task[None]]:
        options.setdefault("shutdown_timeout", 5)
        worker = BridgeWorker(make_app(layer), layer=layer, **options)
        task = asyncio.create_task(worker.run())
        await worker.started()
        running.append((worker, task))
        return worker, task

    yield start
    for worker, task in running:
        worker.stop()
        async with asyncio.timeout(10):
            await task
