"""The ipc:// layer passes the conformance suite every backend passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kanal.layers.ipc import IpcChannelLayer
from kanal.testing import ChannelLayerConformance

# The suite's Django Channels check needs Django settings.
pytestmark = pytest.mark.usefixtures("django_settings")


class TestIpcLayer(ChannelLayerConformance):
    shared_between_instances = True  # two instances on one directory: two processes
    clock_option = "clock"  # expiry tests move a manual clock: no waiting
    channels_backend = "kanal.layers.ipc.IpcChannelLayer"

    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.directory = tmp_path / "layer"

    def make_layer(self, **options: Any) -> IpcChannelLayer:
        return IpcChannelLayer(self.directory, **options)
