"""How bridge messages cross the layer: bodies in chunks, patience with full channels, batches."""

from __future__ import annotations

import asyncio
import time

from kanal._backoff import Backoff
from kanal.bridge._messages import batch_message
from kanal.exceptions import ChannelFull
from kanal.layers import BaseChannelLayer, Message
from kanal.typing import Message as Event

__all__ = ["CHUNK_SIZE", "FULL_CHANNEL_PATIENCE", "Outbox", "chunks", "send_patiently"]

# Request and response bodies cross the layer in chunks well below its 1 MiB message limit.
CHUNK_SIZE = 256 * 1024

# How long a send waits for room in a full channel before giving up (the other side is
# stuck or gone): long enough to ride out a burst, short enough to free the connection.
FULL_CHANNEL_PATIENCE = 10.0

# What a message costs beyond its body, when weighing a batch against CHUNK_SIZE.
_ENVELOPE_WEIGHT = 64


async def send_patiently(layer: BaseChannelLayer, channel: str, message: Message) -> None:
    """``send``, waiting for room while the receiver catches up (backpressure).

    Raises :class:`~kanal.exceptions.ChannelFull` when the channel stays full for
    :data:`FULL_CHANNEL_PATIENCE` seconds.
    """
    backoff = Backoff(0.001, 0.05)
    deadline = time.monotonic() + FULL_CHANNEL_PATIENCE
    while True:
        try:
            await layer.send(channel, message)
            return
        except ChannelFull:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(backoff.next())


def chunks(event: Event, key: str = "body") -> list[Event]:
    """Split an event whose ``key`` holds a large body into several ``more_body`` events.

    The last part keeps the event's own ``more_body``; an event at most
    :data:`CHUNK_SIZE` long (or without ``key``) is returned as it is.
    """
    body = event.get(key) or b""
    if len(body) <= CHUNK_SIZE:
        return [event]
    parts = [body[i : i + CHUNK_SIZE] for i in range(0, len(body), CHUNK_SIZE)]
    more = bool(event.get("more_body", False))
    return [
        {**event, key: part, "more_body": more or index < len(parts) - 1}
        for index, part in enumerate(parts)
    ]


def _weight(message: Message) -> int:
    event = message.get("event") or {}
    body = event.get("body") or event.get("bytes") or event.get("text") or ""
    return len(body) + _ENVELOPE_WEIGHT


class Outbox:
    """A worker's messages to one connection's server, coalesced into batches.

    :meth:`put` queues a message and returns; a flusher task sends everything queued so far
    as one ``bridge.batch``, so what an application sends in one go (a response's start and
    body, or ``bridge.attached`` and the first answer) crosses the layer as one message.
    :meth:`put` waits while more than :data:`CHUNK_SIZE` bytes are queued (backpressure).
    """

    __slots__ = ("_error", "_flusher", "_queued", "_size", "channel", "layer")

    def __init__(self, layer: BaseChannelLayer, channel: str) -> None:
        self.layer = layer
        self.channel = channel
        self._queued: list[Message] = []
        self._size = 0
        self._flusher: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def put(self, message: Message, size: int = 0) -> None:
        """Queue ``message`` (``size`` bytes of body); raise what an earlier send raised."""
        if self._error is not None:
            raise self._error
        self._queued.append(message)
        self._size += size
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        if self._size > CHUNK_SIZE:
            await self.drain()

    async def drain(self) -> None:
        """Wait until everything queued has been sent; raise what sending raised."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        if self._error is not None:
            raise self._error

    async def _flush(self) -> None:
        try:
            while self._queued:
                batch = self._take_batch()
                message = batch[0] if len(batch) == 1 else batch_message(batch)
                await send_patiently(self.layer, self.channel, message)
        except Exception as exc:
            self._error = exc
            self._queued.clear()
            raise

    def _take_batch(self) -> list[Message]:
        """The queued messages that fit in one chunk (at least one)."""
        batch: list[Message] = []
        size = 0
        while self._queued and (not batch or size + _weight(self._queued[0]) <= CHUNK_SIZE):
            message = self._queued.pop(0)
            size += _weight(message)
            batch.append(message)
        self._size = max(0, self._size - size)
        return batch
