"""Scale-out on real servers: sharding by consistent hashing, Sentinel failover, Cluster."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from kanal.exceptions import LayerUnavailable
from kanal.layers.redis import RedisChannelLayer
from kanal.testing import ChannelLayerConformance, RedisServer
from kanal.testing._redis_topologies import RedisCluster, RedisSentinel

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def two_servers() -> Iterator[tuple[RedisServer, RedisServer]]:
    with RedisServer() as first, RedisServer() as second:
        yield first, second


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster(nodes=3) as made:
        yield made


async def _keys(url: str, pattern: str) -> list[bytes]:
    client = Redis.from_url(url)
    try:
        return [key async for key in client.scan_iter(match=pattern)]
    finally:
        await client.aclose()


async def test_sharding_spreads_processes_and_channels(
    two_servers: tuple[RedisServer, RedisServer],
) -> None:
    """Processes' inboxes and named channels land on both shards; everything still works."""
    first, second = two_servers
    url = f"redis://{first.host}:{first.port},{second.host}:{second.port}/0?prefix=sharded"
    layers = [RedisChannelLayer.from_url(url) for _ in range(12)]
    try:
        await layers[0].flush()
        assert len(layers[0].hosts) == 2
        channels = [await layer.new_channel() for layer in layers]
        for layer, channel in zip(layers, channels, strict=True):
            await layer.group_add("everyone", channel)
        await layers[0].group_send("everyone", {"type": "hello"})
        for layer, channel in zip(layers, channels, strict=True):
            async with asyncio.timeout(5):
                assert (await layer.receive(channel))["type"] == "hello"
        queues = [f"queue-{n}" for n in range(20)]
        for name in queues:
            await layers[1].send(name, {"type": "job", "queue": name})
        for name in queues:
            async with asyncio.timeout(5):
                assert (await layers[2].receive(name))["queue"] == name
        # Consistent hashing put some processes' keys on each server.
        on_first = await _keys(first.url, "sharded:alive:*")
        on_second = await _keys(second.url, "sharded:alive:*")
        assert on_first and on_second
        assert len(on_first) + len(on_second) == len(layers)
    finally:
        await layers[0].flush()
        for layer in layers:
            await layer.close()


async def test_sentinel_failover_to_replica() -> None:
    """The master dies; Sentinel promotes the replica; the layer follows by itself."""
    with RedisSentinel() as topology:
        hosts = [{"sentinels": topology.sentinels, "master_name": topology.master_name}]
        layer = RedisChannelLayer(hosts=hosts, timeout=1.0, prefix="failover")
        try:
            channel = await layer.new_channel()
            await layer.group_add("room", channel)
            await layer.send(channel, {"type": "before"})
            async with asyncio.timeout(5):
                assert (await layer.receive(channel))["type"] == "before"

            await asyncio.to_thread(topology.master.kill)
            await asyncio.to_thread(topology.sentinel.wait_for_log, "+switch-master", 20)

            # Sends fail with LayerUnavailable until the client finds the new master.
            async with asyncio.timeout(20):
                while True:
                    with contextlib.suppress(LayerUnavailable):
                        await layer.send(channel, {"type": "after"})
                        break
                    await asyncio.sleep(0.1)  # retry pacing, not a wait for an event
                assert (await layer.receive(channel))["type"] == "after"
                # A membership written just before the crash may not have reached the
                # replica; the layer restores its own within about a second.
                while True:
                    await layer.group_send("room", {"type": "group-after"})
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            assert (await layer.receive(channel))["type"] == "group-after"
                            break
            promoted = Redis(host=topology.replica.host, port=topology.replica.port)
            try:
                role = await promoted.execute_command("ROLE")
                assert role[0] == b"master"
            finally:
                await promoted.aclose()
        finally:
            await layer.close()


async def test_cluster_spreads_keys_over_nodes(cluster: RedisCluster) -> None:
    """With cluster=True, keys carry hash tags and spread over the nodes."""
    layers = [
        RedisChannelLayer(hosts=[cluster.url], cluster=True, prefix="spread") for _ in range(8)
    ]
    try:
        await layers[0].flush()
        channels = [await layer.new_channel() for layer in layers]
        for layer, channel in zip(layers, channels, strict=True):
            await layer.group_add("room", channel)
        await layers[3].group_send("room", {"type": "hello"})
        for layer, channel in zip(layers, channels, strict=True):
            async with asyncio.timeout(5):
                assert (await layer.receive(channel))["type"] == "hello"
        counts = [len(await _keys(node.url, "spread{*")) for node in cluster.nodes]
        assert sum(1 for count in counts if count) >= 2, counts
    finally:
        await layers[0].flush()
        for layer in layers:
            await layer.close()


class TestRedisClusterLayer(ChannelLayerConformance):
    """The whole conformance suite on a three-node Redis Cluster."""

    shared_between_instances = True
    expiry_granularity = 0.5

    @pytest.fixture(autouse=True)
    def _cluster(self, cluster: RedisCluster) -> None:
        self.url = cluster.url

    def make_layer(self, **options: Any) -> RedisChannelLayer:
        return RedisChannelLayer(hosts=[self.url], cluster=True, prefix="conf", **options)
