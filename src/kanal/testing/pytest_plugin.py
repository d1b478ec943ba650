"""kanal's pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

* ``channel_layer``: a fresh :class:`~kanal.layers.InMemoryChannelLayer`, closed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kanal.layers import InMemoryChannelLayer


@pytest.fixture
def channel_layer() -> Iterator[InMemoryChannelLayer]:
    """A fresh in-memory channel layer for one test."""
    layer = InMemoryChannelLayer()
    yield layer
