"""kanal's pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

* ``channel_layer``: a fresh :class:`~kanal.layers.InMemoryChannelLayer`, closed after the test.
* ``redis_server``: a real ``redis-server`` on a free port for the test session.
* ``mosquitto_server``: a real Mosquitto broker on a free port for one test (skipped where
  Mosquitto is not installed).
* ``default_channel_layer``: the layer ``get_channel_layer()`` returns, fresh for one test
  (``KANAL_LAYER`` is set to ``memory://`` and the shared instances are reset around it).
* ``live_server``: ``server = await live_server(app)`` runs ``app`` on a free loopback port
  with kanal's server; ``server.url``/``server.ws_url``; stopped after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

import pytest

from kanal.exceptions import KanalError
from kanal.layers import (
    BaseChannelLayer,
    InMemoryChannelLayer,
    get_channel_layer,
    reset_channel_layers,
)
from kanal.testing._live import LiveServer
from kanal.testing._mosquitto import MosquittoServer
from kanal.testing._redis import RedisServer

F = TypeVar("F", bound=Callable[..., Any])


def async_fixture(function: F) -> F:
    """``pytest_asyncio.fixture`` when installed (it works in strict mode too), else plain.

    The plugin loads for everyone who has kanal installed, pytest-asyncio or not.
    """
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover
        return cast(F, pytest.fixture(function))
    return cast(F, pytest_asyncio.fixture(function))


@async_fixture
async def channel_layer() -> AsyncIterator[InMemoryChannelLayer]:
    """A fresh in-memory channel layer for one test, closed after it."""
    layer = InMemoryChannelLayer()
    try:
        yield layer
    finally:
        await layer.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free port, shared by the session; flush it if you need to."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def mosquitto_server() -> Iterator[MosquittoServer]:
    """A real Mosquitto on a free port for one test (fresh: no sessions or retained messages).

    Skips the test where Mosquitto is not installed (``apt-get install mosquitto``).
    """
    try:
        server = MosquittoServer()
    except KanalError as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@async_fixture
async def default_channel_layer(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[BaseChannelLayer]:
    """The process's shared layer (what consumers use by default), fresh for one test."""
    monkeypatch.setenv("KANAL_LAYER", "memory://")
    reset_channel_layers()
    layer = get_channel_layer()
    try:
        yield layer
    finally:
        await layer.close()
        reset_channel_layers()


@async_fixture
async def live_server() -> AsyncIterator[Callable[..., Awaitable[LiveServer]]]:
    """Start ASGI apps on free ports: ``server = await live_server(app, **config_options)``."""
    started: list[LiveServer] = []

    async def start(app: Any, **options: Any) -> LiveServer:
        server = await LiveServer(app, **options).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            await server.stop()
