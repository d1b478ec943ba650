"""Presence for consumers: a connection listed in a group's presence while it lasts.

See docs/presence.md; the layer's side is :mod:`kanal.layers._presence`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kanal.exceptions import ConfigError
from kanal.layers import BaseChannelLayer, Notify, Presences

__all__ = ["PresenceMixin"]

logger = logging.getLogger("kanal.consumers")


class PresenceMixin:
    """The presence methods of every consumer (a base of ``_ConsumerBase``)."""

    channel_layer: BaseChannelLayer | None
    channel_name: str
    disconnect_timeout: float

    def _presence_layer(self, group: str) -> BaseChannelLayer:
        if self.channel_layer is None:
            raise ConfigError(
                f"{type(self).__name__} cannot use the presence of group {group!r}: it has no "
                "channel layer (uses_channel_layer is False)"
            )
        return self.channel_layer

    async def presence_join(
        self,
        group: str,
        key: str,
        meta: dict[str, Any] | None = None,
        *,
        notify: Notify = "message",
    ) -> None:
        """Make this connection present in ``group`` as ``key`` (a user id, say) with
        ``meta``, until it ends (or :meth:`presence_leave`); joining again updates ``meta``.

        The group hears of it in a diff (``notify``: ``"message"`` for members' handlers
        ``presence_diff(self, message)``, ``"direct"`` for direct subscribers' sockets, or
        ``None``); see :meth:`kanal.layers.BaseChannelLayer.presence_join`.
        """
        layer = self._presence_layer(group)
        # Noted first: a join that failed with the layer unreachable is kept by the layer
        # (its heartbeat writes it later), so it must be left when the connection ends.
        present: list[str] = self.__dict__.setdefault("_present", [])
        if group not in present:
            present.append(group)
        await layer.presence_join(group, self.channel_name, key, meta, notify=notify)

    async def presence_leave(self, group: str) -> None:
        """This connection is no longer present in ``group`` (silent if it was not)."""
        present: list[str] = self.__dict__.get("_present", [])
        if group in present:
            present.remove(group)
        await self._presence_layer(group).presence_leave(group, self.channel_name)

    async def presence(self, group: str) -> Presences:
        """Who is present in ``group``: ``{key: {connection: meta, ...}, ...}``."""
        return await self._presence_layer(group).presence(group)

    async def _leave_presences(self) -> None:
        """Leave every presence this connection joined (when it ends), under the deadline
        of disconnect handling."""
        if self.__dict__.get("_present"):
            try:
                async with asyncio.timeout(self.disconnect_timeout):
                    await self._leave_each()
            except TimeoutError:
                logger.error(
                    "%s: leaving presences did not finish within %.1f s and was abandoned; "
                    "they lapse within presence_ttl",
                    type(self).__name__,
                    self.disconnect_timeout,
                )
                self.__dict__["_present"] = []

    async def _leave_each(self) -> None:
        present: list[str] = self.__dict__.get("_present", [])
        layer = self.channel_layer
        while present and layer is not None:
            group = present.pop()
            try:
                await layer.presence_leave(group, self.channel_name)
            except Exception as exc:
                # The entry lapses within presence_ttl, and another process reports it.
                logger.warning(
                    "%s: leaving the presence of group %r failed (%r); it lapses within "
                    "presence_ttl",
                    type(self).__name__,
                    group,
                    exc,
                )
