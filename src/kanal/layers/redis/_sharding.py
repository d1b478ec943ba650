"""Consistent hashing: which shard holds a process's inbox, a named channel or a member.

Adding a shard moves only about 1/N of the names (a plain ``hash % N`` would move almost
all of them, and with them every queued message and group membership).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from typing import Generic, TypeVar

__all__ = ["HashRing", "process_of"]

T = TypeVar("T")

# Points per shard on the ring: 160 (as in ketama) keeps the load within a few percent of
# even for a handful of shards while the ring stays a few KiB.
_POINTS = 160


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode(), usedforsecurity=False).digest()[:8], "big")


class HashRing(Generic[T]):
    """Maps names to one of ``shards`` by consistent hashing (ketama-style ring)."""

    def __init__(self, shards: Sequence[T], names: Sequence[str]) -> None:
        if not shards:
            raise ValueError("a hash ring needs at least one shard")
        self.shards = list(shards)
        points: list[tuple[int, int]] = []
        for index, name in enumerate(names):
            for replica in range(_POINTS):
                points.append((_hash(f"{name}#{replica}"), index))
        points.sort()
        self._keys = [point for point, _ in points]
        self._owners = [index for _, index in points]
        self._cache: dict[str, T] = {}

    def get(self, name: str) -> T:
        """The shard that owns ``name``."""
        shard = self._cache.get(name)
        if shard is None:
            if len(self.shards) == 1:
                shard = self.shards[0]
            else:
                position = bisect.bisect(self._keys, _hash(name)) % len(self._keys)
                shard = self.shards[self._owners[position]]
            if len(self._cache) >= 50_000:
                self._cache.clear()
            self._cache[name] = shard
        return shard


def process_of(channel: str) -> str | None:
    """The process part of a process-specific channel name, or None for a named channel.

    ``"specific.3f2a!x1"`` -> ``"3f2a"``: the text between the last ``.`` before ``!`` and
    the ``!``. Senders and the group fan-out script compute the same, so a process's
    channels all land in its one inbox whatever prefix ``new_channel`` was given.
    """
    bang = channel.find("!")
    if bang < 0:
        return None
    return channel[:bang].rpartition(".")[2]
