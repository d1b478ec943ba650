"""Direct delivery's side in the channel layer: broadcasts that servers write themselves.

A broadcast for direct delivery is an ordinary group message of type ``kanal.direct``
(:func:`direct_message` builds it), so it travels on every backend the way any group
message does: once per receiving process. In each server process,
:class:`DirectGroupTransport` holds one channel, adds it to each group that has local
subscribers (one membership per group per process, renewed like a consumer's), receives
the broadcasts and hands them in batches to the server, which frames each once and writes
it to its subscribers (``kanal.server``'s ``kanal.groups`` extension; ``docs/direct.md``).

This module does not import the server: the server names it by an import string and
calls it through a small interface of its own (``join``, ``leave``, ``close``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, Final, TypeVar

from kanal._backoff import Backoff
from kanal._tasks import detached_task
from kanal.exceptions import InvalidMessage, LayerClosed
from kanal.layers._base import DEFAULT_GROUP_EXPIRY, BaseChannelLayer, Message
from kanal.layers._history import POSITION_KEY, Position

__all__ = ["DIRECT_MESSAGE_TYPE", "DirectGroupTransport", "direct_message", "direct_text"]

logger = logging.getLogger("kanal.layers")

#: The ``type`` of a group message that servers write to their subscribers themselves.
DIRECT_MESSAGE_TYPE: Final = "kanal.direct"
# Broadcasts taken from the process's buffer in one go after a receive: one server write
# per subscriber for the lot instead of one per broadcast, when they arrive faster than the
# server writes them.
_BATCH: Final = 256
# The process's direct channel receives every broadcast of every group it subscribed to:
# a burst must not find it at the default capacity of 100. Only the sender's capacity is
# enforced, so with a shared backend every process sets this (the transport does, for its
# own process; other senders get it from channel_capacity).
_CAPACITY: Final = 10_000
_PREFIX: Final = "direct"
_M = TypeVar("_M", bound=MutableMapping[str, Any])
_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z", re.ASCII)


def direct_message(
    group: str,
    *,
    text: str | None = None,
    bytes_data: bytes | None = None,
    close: int | None = None,
    reason: str = "",
    position_field: str | None = None,
) -> Message:
    """A broadcast for ``group``'s direct subscribers: give ``text``, ``bytes_data`` or ``close``.

    Send it with ``layer.group_send(group, direct_message(group, text=...))``. ``close``
    is a WebSocket close code (1000, or 3000-4999 for an application's own) and ``reason``
    goes with it.

    ``position_field`` (for a ``text`` that is a JSON object, in a group with history:
    docs/history.md) puts the message's position into the object under that name, as
    ``"<epoch>:<offset>"``, so that the client knows where to resume from; the text is
    still framed once per process.
    """
    given = [
        name
        for name, value in (("text", text), ("bytes_data", bytes_data), ("close", close))
        if value is not None
    ]
    if len(given) != 1:
        raise InvalidMessage("a direct message needs exactly one of text, bytes_data or close")
    message: dict[str, Any] = {"type": DIRECT_MESSAGE_TYPE, "group": group}
    if position_field is not None:
        if not isinstance(position_field, str) or not _FIELD_RE.match(position_field):
            raise InvalidMessage(
                f"position_field must be a name of letters, digits and '_', not {position_field!r}"
            )
        if not isinstance(text, str) or not text.startswith("{"):
            raise InvalidMessage("position_field needs a text that is a JSON object")
        message["position_field"] = position_field
    if text is not None:
        if not isinstance(text, str):
            raise InvalidMessage(f"text must be a str, not {type(text).__name__}")
        message["text"] = text
    elif bytes_data is not None:
        if not isinstance(bytes_data, (bytes, bytearray, memoryview)):
            raise InvalidMessage(f"bytes_data must be bytes, not {type(bytes_data).__name__}")
        message["bytes"] = bytes(bytes_data)
    else:
        if type(close) is not int or not (close == 1000 or 3000 <= close <= 4999):
            raise InvalidMessage(f"close must be 1000 or a code from 3000 to 4999, not {close!r}")
        if len(reason.encode()) > 123:
            raise InvalidMessage("a close reason is at most 123 bytes (RFC 6455 §5.5)")
        message["close"] = close
        message["reason"] = reason
    return message


def direct_text(message: _M) -> _M:
    """The broadcast as its subscribers get it: with its position in the text, when the
    sender asked for it (``position_field``) and the group keeps history. Changes and
    returns ``message``."""
    field = message.get("position_field")
    position = message.get(POSITION_KEY)
    text = message.get("text")
    if field is None or position is None or not isinstance(text, str) or text[:1] != "{":
        return message
    rest = text[1:]
    member = f"{json.dumps(str(field))}:{json.dumps(str(position))}"
    message["text"] = "{" + member + ("" if rest.lstrip().startswith("}") else ",") + rest
    return message


class DirectGroupTransport:
    """One server process's memberships for direct delivery, and the loop receiving them.

    ``deliver`` is the server's: it gets ``[(group, message), ...]``. ``layer`` defaults to
    :func:`~kanal.layers.get_channel_layer`'s (``$KANAL_LAYER``, or the framework's), the
    one the application's consumers use.
    """

    def __init__(
        self,
        deliver: Callable[[Sequence[tuple[str, Message]]], None],
        layer: BaseChannelLayer | None = None,
    ) -> None:
        self._deliver = deliver
        self._layer = layer
        self._channel: asyncio.Future[str] | None = None
        self._receiving: asyncio.Task[None] | None = None
        self._renewal: asyncio.Task[None] | None = None
        self.groups: set[str] = set()

    @property
    def layer(self) -> BaseChannelLayer:
        """The layer the broadcasts come through."""
        if self._layer is None:
            from kanal.layers._registry import get_channel_layer

            self._layer = get_channel_layer()
        return self._layer

    async def _channel_name(self) -> str:
        # The first join creates the channel; joins arriving meanwhile wait for the same one.
        future = self._channel
        if future is None:
            loop = asyncio.get_running_loop()
            future = self._channel = loop.create_future()
            try:
                layer = self.layer
                name = await layer.new_channel(_PREFIX)
            except BaseException as exc:
                self._channel = None
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                    future.exception()  # retrieved here; raised below
                else:  # cancelled: the joins waiting on it are cancelled too
                    future.cancel()
                raise
            layer.add_channel_capacity(name, _CAPACITY)
            future.set_result(name)
            self._receiving = detached_task(self._receive(name), loop=loop)
            self._renewal = detached_task(self._renew(name), loop=loop)
            return name
        return await asyncio.shield(future)

    async def join(self, group: str) -> None:
        """Add this process's channel to ``group``."""
        channel = await self._channel_name()
        await self.layer.group_add(group, channel)
        self.groups.add(group)

    async def leave(self, group: str) -> None:
        """Remove this process's channel from ``group``."""
        self.groups.discard(group)
        if self._channel is not None and self._channel.done():
            await self.layer.group_discard(group, self._channel.result())

    async def history(self, group: str, since: str) -> list[Message]:
        """The broadcasts to ``group`` after the position ``since``, oldest first, as
        subscribers get them (a reconnecting subscriber's catch-up: docs/history.md).

        Raises the layer's ``HistoryGap`` or ``EpochChanged`` when they cannot all be
        recovered, ``NoHistory`` when the group keeps none.
        """
        history = await self.layer.group_history(group, since=Position.parse(since))
        return [
            direct_text(message)
            for message in history.messages
            if message.get("type") == DIRECT_MESSAGE_TYPE
        ]

    async def _receive(self, channel: str) -> None:
        layer = self.layer
        take = layer.receive_nowait
        deliver = self._deliver
        backoff = Backoff(0.05, 2.0, jitter=0.5)
        while True:
            try:
                message = await layer.receive(channel)
            except LayerClosed:
                return
            except Exception as exc:
                # An outage: broadcasts meanwhile are lost (and counted by the layer).
                delay = backoff.next()
                logger.warning(
                    "direct delivery: receiving failed (%r); retrying in %.2fs", exc, delay
                )
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            batch = [message]
            while len(batch) < _BATCH:
                more = take(channel)
                if more is None:
                    break
                batch.append(more)
            items = []
            for item in batch:
                group = item.get("group")
                if item.get("type") == DIRECT_MESSAGE_TYPE and isinstance(group, str):
                    items.append((group, direct_text(item)))
                else:
                    logger.warning(
                        "direct delivery: ignored a message of type %r in a direct group "
                        "(send direct_message(group, ...) to groups with direct subscribers)",
                        item.get("type"),
                    )
            if items:
                try:
                    deliver(items)
                except Exception:
                    logger.exception("direct delivery: writing broadcasts failed")

    async def _renew(self, channel: str) -> None:
        # Memberships expire unless renewed, as a consumer's do (consumers/_base.py).
        interval = float(getattr(self.layer, "group_expiry", DEFAULT_GROUP_EXPIRY)) / 2
        while True:
            await asyncio.sleep(interval)
            for group in list(self.groups):
                try:
                    await self.layer.group_add(group, channel)
                except Exception as exc:
                    logger.warning("direct delivery: renewing group %r failed: %r", group, exc)

    async def close(self) -> None:
        """Leave every group and stop receiving."""
        for task in (self._receiving, self._renewal):
            if task is not None:
                task.cancel()
        self._receiving = self._renewal = None
        future = self._channel
        if future is None or not future.done() or future.exception() is not None:
            return
        channel = future.result()
        layer = self.layer
        if layer.closed:
            return
        for group in list(self.groups):
            try:
                await layer.group_discard(group, channel)
            except Exception as exc:
                logger.warning("direct delivery: leaving group %r failed: %r", group, exc)
        self.groups.clear()
