"""Request/reply over the channel layer: call a service by channel name, get its answer.

A request is an ordinary message with two more keys, ``reply_channel`` and
``correlation_id``. The service answers on the reply channel with a ``kanal.reply`` message::

    {"type": "kanal.reply", "correlation_id": "...", "ok": True, "result": {...}}
    {"type": "kanal.reply", "correlation_id": "...", "ok": False,
     "error": {"type": "ValueError", "message": "..."}}

Each process (each layer and event loop) has one reply channel and one task reading it, which
hands each reply to the call waiting for it. A reply that arrives after its call timed out is
discarded at once (and counted), so nothing piles up.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kanal._histogram import Histogram
from kanal._tasks import detached_task
from kanal.consumers import run_sync
from kanal.exceptions import InvalidMessage, LayerClosed, ServiceError, ServiceTimeout
from kanal.layers import BaseChannelLayer, Message, get_channel_layer

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "CallStats",
    "call",
    "call_stats",
    "call_sync",
    "reply",
    "service",
]

logger = logging.getLogger("kanal.worker")

# 10 s: an interactive request that has not been answered in 10 s is better reported as
# failed than left hanging; long jobs should be sent as tasks, not calls.
DEFAULT_CALL_TIMEOUT = 10.0

REPLY_TYPE = "kanal.reply"

Handler = Callable[[Message], Awaitable[Message | None] | Message | None]


@dataclass(slots=True)
class CallStats:
    """What this process's :func:`call` calls to one service channel came to."""

    calls: int = 0
    #: No reply within the timeout (:class:`~kanal.exceptions.ServiceTimeout`).
    timeouts: int = 0
    #: The service answered with its error (:class:`~kanal.exceptions.ServiceError`).
    errors: int = 0
    #: Seconds from sending the request to its answer, answered calls only.
    latency: Histogram = field(default_factory=Histogram)


# Per service channel; bounded, since a channel name could come from data: past the bound
# every other channel is counted under one name.
_MAX_CALL_CHANNELS = 200
_OTHER = "(other)"
_call_stats: dict[str, CallStats] = {}


def _stats_for(channel: str) -> CallStats:
    stats = _call_stats.get(channel)
    if stats is None:
        if len(_call_stats) >= _MAX_CALL_CHANNELS:
            channel = _OTHER
            stats = _call_stats.get(channel)
        if stats is None:
            stats = _call_stats[channel] = CallStats()
    return stats


def call_stats() -> dict[str, CallStats]:
    """A copy of this process's :class:`CallStats`, by service channel."""
    return {
        name: CallStats(s.calls, s.timeouts, s.errors, s.latency.copy())
        for name, s in _call_stats.items()
    }


class _ReplyHub:
    """The reply channel of one layer on one event loop, and the calls waiting on it."""

    def __init__(self, layer: BaseChannelLayer, key: tuple[int, int]) -> None:
        self.layer = layer
        self.key = key
        self.channel = ""
        self.waiting: dict[str, asyncio.Future[Message]] = {}
        self.late = 0  # replies discarded because their call had given up
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None

    async def start(self) -> None:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._task = detached_task(self._read(), name="kanal-reply-hub")
        await asyncio.shield(self._ready)

    def new_id(self) -> str:
        return f"{self._prefix}{next(self._ids):x}"

    async def _read(self) -> None:
        assert self._ready is not None
        failure: BaseException | None = None
        try:
            self.channel = await self.layer.new_channel("reply")
            self._ready.set_result(None)
            while True:
                message = await self.layer.receive(self.channel)
                future = self.waiting.pop(str(message.get("correlation_id")), None)
                if future is None or future.done():
                    self.late += 1
                    logger.debug(
                        "discarded a late reply on %s (correlation_id %r)",
                        self.channel,
                        message.get("correlation_id"),
                    )
                else:
                    future.set_result(message)
        except LayerClosed as exc:
            failure = exc  # the layer closed: the hub ends quietly with it
        except asyncio.CancelledError:
            failure = LayerClosed("the reply channel's task was cancelled")
            raise
        except Exception as exc:
            failure = exc
            logger.error("the reply channel %s stopped: %r", self.channel, exc)
        finally:
            _hubs.pop(self.key, None)
            error = (
                failure
                if isinstance(failure, LayerClosed)
                else LayerClosed(f"the reply channel stopped: {failure!r}")
            )
            if not self._ready.done():
                self._ready.set_exception(error)
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(error)
            self.waiting.clear()


# One hub per (layer, loop). Keyed by ids because layers and loops need not be hashable;
# a finalizer drops the entry when the layer goes away.
_hubs: dict[tuple[int, int], _ReplyHub] = {}


def _hub(layer: BaseChannelLayer) -> _ReplyHub:
    key = (id(layer), id(asyncio.get_running_loop()))
    hub = _hubs.get(key)
    if hub is None:
        hub = _hubs[key] = _ReplyHub(layer, key)
        weakref.finalize(layer, _hubs.pop, key, None)
    return hub


async def call(
    channel: str,
    message: Message,
    *,
    timeout: float = DEFAULT_CALL_TIMEOUT,  # noqa: ASYNC109 (call(..., timeout=5) reads best)
    layer: BaseChannelLayer | None = None,
) -> Any:
    """Send ``message`` to the service on ``channel`` and return its result.

    Raises :class:`~kanal.exceptions.ServiceError` when the service raised (with its error
    type and message), :class:`~kanal.exceptions.ServiceTimeout` (a ``TimeoutError``) when
    no reply came within ``timeout`` seconds, and the layer's errors for the request itself
    (``ChannelFull`` when the service is that far behind, ``InvalidMessage``...).
    """
    if layer is None:
        layer = get_channel_layer()
    if "reply_channel" in message or "correlation_id" in message:
        raise ValueError("call() sets 'reply_channel' and 'correlation_id' itself")
    hub = _hub(layer)
    await hub.start()
    stats = _stats_for(channel)
    stats.calls += 1
    started = time.perf_counter()
    correlation_id = hub.new_id()
    future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    hub.waiting[correlation_id] = future
    try:
        await layer.send(
            channel, {**message, "reply_channel": hub.channel, "correlation_id": correlation_id}
        )
        async with asyncio.timeout(timeout):
            answer = await future
    except TimeoutError:
        stats.timeouts += 1
        raise ServiceTimeout(
            f"no reply from {channel!r} within {timeout:g} s to a {message.get('type')!r} call",
            channel=channel,
            timeout=timeout,
        ) from None
    finally:
        hub.waiting.pop(correlation_id, None)
    stats.latency.observe(time.perf_counter() - started)
    if answer.get("ok"):
        return answer.get("result")
    stats.errors += 1
    error = answer.get("error") or {}
    raise ServiceError(
        f"{channel!r} failed to handle {message.get('type')!r}: "
        f"{error.get('type', 'Error')}: {error.get('message', '')}",
        channel=channel,
        remote_type=str(error.get("type", "Error")),
        remote_message=str(error.get("message", "")),
    )


def call_sync(
    channel: str,
    message: Message,
    *,
    timeout: float = DEFAULT_CALL_TIMEOUT,
    layer: BaseChannelLayer | None = None,
) -> Any:
    """:func:`call` for synchronous code (scripts, Django views, task queues)."""
    if layer is None:
        layer = get_channel_layer()
    chosen = layer
    return chosen.sync.run(lambda: call(channel, message, timeout=timeout, layer=chosen))


async def reply(
    request: Message,
    result: Any = None,
    *,
    error: BaseException | None = None,
    layer: BaseChannelLayer | None = None,
) -> bool:
    """Answer ``request`` (a message sent by :func:`call`) with ``result`` or ``error``.

    Returns False, and does nothing, if the request has no ``reply_channel`` (it was sent as a
    plain task, not a call).
    """
    reply_channel = request.get("reply_channel")
    if not reply_channel:
        return False
    if layer is None:
        layer = get_channel_layer()
    answer: Message = {"type": REPLY_TYPE, "correlation_id": request.get("correlation_id")}
    if error is None:
        answer.update(ok=True, result=result)
    else:
        answer.update(ok=False, error={"type": type(error).__name__, "message": str(error)})
    await layer.send(reply_channel, answer)
    return True


def service(handler: Handler, *, layer: BaseChannelLayer | None = None) -> Any:
    """Turn ``handler(message) -> result`` into an application a worker runs for a channel.

    ``handler`` may be async or sync (sync ones run by :func:`kanal.consumers.run_sync`). Its
    return value is sent back to the caller; an exception it raises goes back as a
    :class:`ServiceError` for the caller and is logged here. A message sent without a reply
    channel (a plain task) is handled the same way, with nothing sent back.

    ::

        async def thumbnails(message):
            return {"url": await make_thumbnail(message["image"])}

        application = ChannelNameRouter({"thumbnails": service(thumbnails)})
    """
    is_async = inspect.iscoroutinefunction(handler)
    name = getattr(handler, "__qualname__", repr(handler))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        chosen = layer or get_channel_layer()
        while True:
            message = await receive()
            try:
                if is_async:
                    result = await handler(message)  # type: ignore[misc]
                else:
                    result = await run_sync(handler, message)
            except Exception as exc:
                logger.exception(
                    "service %s on channel %r failed to handle a %r message",
                    name,
                    scope.get("channel"),
                    message.get("type"),
                )
                await reply(message, error=exc, layer=chosen)
            else:
                try:
                    await reply(message, result, layer=chosen)
                except InvalidMessage as exc:
                    logger.error(
                        "service %s on channel %r returned a result that cannot be sent: %s",
                        name,
                        scope.get("channel"),
                        exc,
                    )
                    await reply(message, error=exc, layer=chosen)

    app.__qualname__ = app.__name__ = f"service({name})"
    return app
