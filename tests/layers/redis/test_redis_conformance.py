"""The Redis layer passes the conformance suite every backend passes, on a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kanal.layers import BaseChannelLayer
from kanal.layers.redis import RedisChannelLayer
from kanal.testing import ChannelLayerConformance, RedisServer

# The suite's Django Channels check needs Django settings.
pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("django_settings")]


class TestRedisLayer(ChannelLayerConformance):
    shared_between_instances = True
    channels_backend = "kanal.layers.redis.RedisChannelLayer"
    # Message deadlines are wall-clock milliseconds checked by Lua and by the receiving
    # process; 0.5 s keeps the expiry tests quick with ample margin on a loaded machine.
    expiry_granularity = 0.5

    @pytest.fixture(autouse=True)
    def _server(self, redis_server: RedisServer) -> None:
        self.url = redis_server.url
        self.redis = redis_server

    async def lose_history(self, layer: BaseChannelLayer) -> None:
        """A real restart of the server, which keeps nothing (no persistence)."""
        await asyncio.to_thread(self.redis.restart)

    def make_layer(self, **options: Any) -> RedisChannelLayer:
        return RedisChannelLayer(hosts=[self.url], prefix="conformance", **options)


class TestRedisLayerEncrypted(TestRedisLayer):
    """The same suite with message bodies encrypted (keys rotated: old key still decrypts)."""

    def make_layer(self, **options: Any) -> RedisChannelLayer:
        return RedisChannelLayer(
            hosts=[self.url],
            prefix="conformance-encrypted",
            symmetric_encryption_keys=["new secret", "old secret"],
            **options,
        )
