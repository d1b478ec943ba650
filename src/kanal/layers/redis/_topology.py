"""Where the layer's keys live: its shards (servers, or a cluster's hash tags) on one loop.

A :class:`Shard` is one place keys live and the clients that reach it; :class:`Shards` is
every shard of a layer on one event loop, made from the configured hosts, with the ring
that picks the shard of a name (a process's inbox, a named channel, a group's members of
one process).
"""

from __future__ import annotations

import asyncio
import logging

from kanal._histogram import Histogram
from kanal.exceptions import LayerUnavailable
from kanal.layers.redis._connection import (
    Batcher,
    Client,
    HostSpec,
    Recovery,
    unavailable_errors,
)
from kanal.layers.redis._sharding import HashRing

__all__ = ["CLUSTER_TAGS", "Shard", "Shards"]

logger = logging.getLogger("kanal.layers.redis")

# Redis Cluster: the layer's keys are spread over this many hash tags ({0}..{15}), each a
# "virtual shard" of a few member processes' inboxes and groups. 16 spreads load over any
# cluster of up to a few dozen primaries while a group_send stays 16 scripts (sent as one
# pipeline per node).
CLUSTER_TAGS = 16


class Shard:
    """One place keys live: a server (or a cluster hash tag) and its clients."""

    __slots__ = ("batcher", "blocking", "name", "prefix")

    def __init__(self, name: str, prefix: str, batcher: Batcher, blocking: Client) -> None:
        self.name = name
        self.prefix = prefix  # the key prefix, hash tag included: "asgi" or "asgi{3}"
        self.batcher = batcher
        self.blocking = blocking  # a separate pool: blocking pops hold their connection

    def key(self, kind: str, name: str) -> str:
        """The Redis key of ``kind`` (in, n, ch, g, gc) for ``name`` on this shard."""
        return f"{self.prefix}:{kind}:{name}"


class Shards:
    """Every shard of a layer on one event loop, and the ring that picks one by name.

    ``outage_timeout`` and ``recovery`` go to each :class:`Batcher` (see there).
    """

    def __init__(
        self,
        hosts: list[HostSpec],
        prefix: str,
        timeout: float,
        cluster: bool,
        tags: int = CLUSTER_TAGS,
        *,
        outage_timeout: float = 0.0,
        recovery: Recovery | None = None,
        round_trips: Histogram | None = None,
    ) -> None:
        self.timeout = timeout
        self._clients: list[Client] = []
        self._batchers: list[Batcher] = []
        shards: list[Shard] = []
        if cluster:
            spec = hosts[0]
            client, extra = spec.make_client(timeout=timeout, blocking=False, cluster=True)
            blocking, more = spec.make_client(timeout=timeout, blocking=True, cluster=True)
            batcher = Batcher(
                client,
                spec.name,
                timeout,
                outage_timeout=outage_timeout,
                recovery=recovery,
                round_trips=round_trips,
            )
            self._clients += [client, blocking, *extra, *more]
            self._batchers.append(batcher)
            for tag in range(tags):
                shards.append(
                    Shard(f"{spec.name}{{{tag}}}", f"{prefix}{{{tag}}}", batcher, blocking)
                )
        else:
            for spec in hosts:
                client, extra = spec.make_client(timeout=timeout, blocking=False, cluster=False)
                blocking, more = spec.make_client(timeout=timeout, blocking=True, cluster=False)
                batcher = Batcher(
                    client,
                    spec.name,
                    timeout,
                    outage_timeout=outage_timeout,
                    recovery=recovery,
                    round_trips=round_trips,
                )
                self._clients += [client, blocking, *extra, *more]
                self._batchers.append(batcher)
                shards.append(Shard(spec.name, prefix, batcher, blocking))
        self.all = shards
        self._ring = HashRing(shards, [shard.name for shard in shards])

    def for_name(self, name: str) -> Shard:
        """The shard of a process (its inbox, counts, memberships) or of a named channel."""
        return self._ring.get(name)

    async def delete_all(self, prefix: str) -> None:
        """Delete every key of the layer (``prefix:...`` and ``prefix{tag}:...``)."""
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "[:{]*"
        try:
            async with asyncio.timeout(self.timeout * 4):
                for batcher in self._batchers:
                    try:
                        await self._delete_matching(batcher.client, pattern)
                    except unavailable_errors:
                        # Once more: a server restarted since the last use leaves pooled
                        # connections that fail once before the pool reconnects.
                        await self._delete_matching(batcher.client, pattern)
        except unavailable_errors as exc:  # TimeoutError included (an OSError)
            reason = str(exc) or type(exc).__name__
            raise LayerUnavailable(f"flush could not reach Redis: {reason}") from exc

    @staticmethod
    async def _delete_matching(client: Client, pattern: str) -> None:
        # Not the processes' alive markers: without its marker, every other process would
        # take the flush for Redis losing its data, and warn.
        keys = [
            key
            async for key in client.scan_iter(match=pattern, count=1000)
            if b":alive:" not in key
        ]
        for start in range(0, len(keys), 500):
            await client.unlink(*keys[start : start + 500])

    async def aclose(self) -> None:
        """Close every batcher and client (their connections)."""
        for batcher in self._batchers:
            await batcher.aclose()
        for client in self._clients:
            try:
                await client.aclose()
            except Exception as exc:  # a dead server must not stop the others from closing
                logger.debug("closing a Redis client failed: %s", exc)
