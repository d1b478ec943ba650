"""Fixtures of the Redis layer tests: real redis-server processes on free ports."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from kanal.testing import RedisServer

if shutil.which("redis-server") is None:  # pragma: no cover - the Makefile installs it
    pytest.skip("redis-server is not installed", allow_module_level=True)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that kill or restart it."""
    with RedisServer() as server:
        yield server
