"""The in-memory layer passes the conformance suite every backend passes."""

from __future__ import annotations

from typing import Any

from kanal.layers import InMemoryChannelLayer
from kanal.testing import ChannelLayerConformance


class TestInMemoryLayer(ChannelLayerConformance):
    clock_option = "clock"  # expiry tests move a manual clock: no waiting

    def make_layer(self, **options: Any) -> InMemoryChannelLayer:
        return InMemoryChannelLayer(**options)
