"""The in-memory layer passes the conformance suite every backend passes."""

from __future__ import annotations

from typing import Any

import pytest

from kanal.layers import InMemoryChannelLayer
from kanal.testing import ChannelLayerConformance

# The suite's Django Channels check needs Django settings.
pytestmark = pytest.mark.usefixtures("django_settings")


class TestInMemoryLayer(ChannelLayerConformance):
    clock_option = "clock"  # expiry tests move a manual clock: no waiting
    channels_backend = "kanal.layers.InMemoryChannelLayer"

    def make_layer(self, **options: Any) -> InMemoryChannelLayer:
        return InMemoryChannelLayer(**options)
