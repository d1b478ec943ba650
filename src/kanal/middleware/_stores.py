"""Where server-side sessions live: in memory (one process) or in Redis (shared)."""

from __future__ import annotations

import abc
import json
import time
from typing import Any

from kanal.exceptions import SessionError

__all__ = ["MemorySessionStore", "RedisSessionStore", "SessionStore"]


def _encode(data: dict[str, Any]) -> str:
    """Session data as stores keep it, JSON; what JSON cannot hold is refused at save."""
    try:
        return json.dumps(data)
    except TypeError as exc:
        raise SessionError(f"session data must be JSON-serialisable: {exc}") from None


def _decode(payload: str | bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(payload)
    return data


class SessionStore(abc.ABC):
    """Storage of session data by key; implement these three methods for another store."""

    @abc.abstractmethod
    async def load(self, key: str) -> dict[str, Any] | None:
        """The data saved under ``key``, or ``None`` if it is missing or expired."""

    @abc.abstractmethod
    async def save(self, key: str, data: dict[str, Any], max_age: int) -> None:
        """Save ``data`` under ``key`` for ``max_age`` seconds."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Forget ``key`` (silent if missing)."""

    async def close(self) -> None:
        """Release connections (nothing for stores without any)."""
        return None


class MemorySessionStore(SessionStore):
    """Sessions in this process's memory: for development and single-process servers."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[float, str]] = {}

    async def load(self, key: str) -> dict[str, Any] | None:
        """The data under ``key`` unless expired."""
        found = self._data.get(key)
        if found is None:
            return None
        deadline, payload = found
        if deadline < time.monotonic():
            del self._data[key]
            return None
        return _decode(payload)

    async def save(self, key: str, data: dict[str, Any], max_age: int) -> None:
        """Store a JSON copy, so later changes to ``data`` do not leak in unsaved."""
        self._data[key] = (time.monotonic() + max_age, _encode(data))
        if len(self._data) % 1024 == 0:
            self._sweep()

    async def delete(self, key: str) -> None:
        """Forget ``key``."""
        self._data.pop(key, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for key in [k for k, (deadline, _) in self._data.items() if deadline < now]:
            del self._data[key]


class RedisSessionStore(SessionStore):
    """Sessions in Redis (``redis.asyncio``), shared by every process; Redis expires them.

    ``RedisSessionStore("redis://localhost:6379/0")`` or ``RedisSessionStore(client=...)``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        prefix: str = "kanal:session:",
    ) -> None:
        if (url is None) == (client is None):
            raise SessionError("RedisSessionStore needs either a URL or a client, not both")
        if url is not None:
            try:
                import redis.asyncio as aioredis
            except ImportError as exc:
                raise SessionError(
                    f"RedisSessionStore needs the redis package (pip install 'kanal[redis]'): {exc}"
                ) from None
            client = aioredis.Redis.from_url(url)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self.prefix = prefix

    async def load(self, key: str) -> dict[str, Any] | None:
        """The data under ``key``; ``None`` if Redis has none (expired or never saved)."""
        raw = await self.client.get(self.prefix + key)
        if raw is None:
            return None
        return _decode(raw)

    async def save(self, key: str, data: dict[str, Any], max_age: int) -> None:
        """``SET key json EX max_age``."""
        await self.client.set(self.prefix + key, _encode(data), ex=max_age)

    async def delete(self, key: str) -> None:
        """``DEL key``."""
        await self.client.delete(self.prefix + key)

    async def close(self) -> None:
        """Close the connection pool if this store created it."""
        if self._owns_client:
            await self.client.aclose()
