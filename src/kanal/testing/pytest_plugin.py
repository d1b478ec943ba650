"""kanal's pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

* ``channel_layer``: a fresh :class:`~kanal.layers.InMemoryChannelLayer`, closed after the test.
* ``redis_server``: a real ``redis-server`` on a free port for the test session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kanal.layers import InMemoryChannelLayer
from kanal.testing._redis import RedisServer


@pytest.fixture
def channel_layer() -> Iterator[InMemoryChannelLayer]:
    """A fresh in-memory channel layer for one test."""
    layer = InMemoryChannelLayer()
    yield layer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free port, shared by the session; flush it if you need to."""
    with RedisServer() as server:
        yield server
