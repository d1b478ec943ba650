"""The worker: runs an application's consumers for messages on named channels."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from kanal._histogram import Histogram
from kanal.exceptions import ConfigError, LayerClosed, WorkerError
from kanal.layers import BaseChannelLayer, Message, require_valid_channel_name
from kanal.worker._lifecycle import Lifecycle

__all__ = ["DEFAULT_SHUTDOWN_TIMEOUT", "Worker"]

logger = logging.getLogger("kanal.worker")

# 30 s: the usual grace period of process managers (systemd, Kubernetes) before SIGKILL, so
# a worker finishes what it holds before it would be killed anyway.
DEFAULT_SHUTDOWN_TIMEOUT = 30.0


class _Slot:
    """One application instance serving one channel, and the message it is handling."""

    __slots__ = ("channel", "current", "idle", "received", "started", "task")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.current: Message | None = None
        self.started = 0.0  # perf_counter() when ``current`` was taken
        self.idle = False
        self.received = 0
        self.task: asyncio.Task[None] | None = None


class Worker(Lifecycle):
    """Receive messages from ``channels`` and run ``application`` for them.

    For each channel the worker keeps ``concurrency`` application instances, each with the
    scope ``{"type": "channel", "channel": name}`` (route them with ``ChannelNameRouter``).
    An instance's ``receive()`` takes the next message from the layer only when the instance
    is ready for it, so a worker never holds messages it is not working on: several workers on
    one channel share its messages, each handled once, and a stopping worker leaves the rest
    in the channel.

    An instance that fails is logged (channel, message type, traceback) and replaced. One
    that fails before taking any message is a setup error (no route for the channel, an
    import error...): the worker stops and :meth:`run` raises :class:`WorkerError`.

    :meth:`stop` is graceful: idle instances stop at once; busy ones get up to
    ``shutdown_timeout`` seconds to finish their message; a message still unfinished then is
    handed back to its channel (sent again) and logged. :meth:`serve` is :meth:`run` with
    SIGTERM and SIGINT calling :meth:`stop` (what ``kanal worker`` runs).
    """

    def __init__(
        self,
        application: Any,
        channels: Sequence[str],
        *,
        layer: BaseChannelLayer | None = None,
        concurrency: int = 1,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> None:
        if not channels:
            raise ConfigError("a worker needs at least one channel to receive from")
        for name in channels:
            require_valid_channel_name(name, receive=True)
            if "!" in name:
                raise ConfigError(
                    f"a worker cannot receive on the process-specific channel {name!r}"
                )
        if not (isinstance(concurrency, int) and concurrency > 0):
            raise ConfigError(f"concurrency must be a positive integer, not {concurrency!r}")
        super().__init__(layer)
        self.application = application
        self.channels = list(dict.fromkeys(channels))
        self.concurrency = concurrency
        self.shutdown_timeout = shutdown_timeout
        self.handled = 0  # messages whose handling finished (instance asked for the next)
        self.failed = 0  # instances that raised
        self.handed_back = 0
        #: Per channel: seconds from taking a message to asking for the next (or failing),
        #: and the instances that failed.
        self.durations = {name: Histogram() for name in self.channels}
        self.failures = dict.fromkeys(self.channels, 0)
        self._slots: list[_Slot] = []

    @property
    def busy(self) -> int:
        """Instances handling a message now."""
        return sum(1 for slot in self._slots if slot.current is not None and not slot.idle)

    # -- the lifecycle's steps ----------------------------------------------------------

    def _start(self, layer: BaseChannelLayer) -> list[asyncio.Task[None]]:
        for channel in self.channels:
            for _ in range(self.concurrency):
                self._spawn(_Slot(channel))
        logger.info(
            "worker listening on %s (%d instance(s) each, layer %r)",
            ", ".join(self.channels),
            self.concurrency,
            layer,
        )
        # The instances are replaced as they end, so none of them is a task that stops
        # the worker by ending: a setup failure goes through _fail.
        return []

    # -- instances -----------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        scope = {"type": "channel", "channel": slot.channel}
        layer = self.layer
        assert layer is not None
        stopping = self._stopping

        durations = self.durations[slot.channel]

        async def receive() -> Message:
            if slot.current is not None:
                slot.current = None
                self.handled += 1
                durations.observe(time.perf_counter() - slot.started)
            if stopping.is_set():
                # Ready for more while the worker stops: end this instance, take nothing.
                # The caller may be a task of the application's own (a kanal consumer
                # reads its sources in tasks), which a CancelledError would end alone,
                # leaving the instance waiting for it until the shutdown timeout: cancel
                # the instance itself. Not when the caller is the instance: the error
                # raised here ends it, and a cancel pending on it would also cut short
                # the awaits of its own cleanup.
                if slot.task is not None and asyncio.current_task() is not slot.task:
                    slot.task.cancel()
                raise asyncio.CancelledError
            slot.idle = True
            try:
                message = await layer.receive(slot.channel)
            finally:
                slot.idle = False
            slot.current = message
            slot.started = time.perf_counter()
            slot.received += 1
            return message

        async def send(message: Message) -> None:
            raise WorkerError(
                f"the application for channel {slot.channel!r} sent {message.get('type')!r} "
                "to the worker; a channel scope has no client: send through the channel layer "
                "(e.g. to a reply_channel) instead"
            )

        async def instance() -> None:
            await self.application(scope, receive, send)

        slot.task = asyncio.create_task(instance(), name=f"kanal-worker:{slot.channel}")
        slot.task.add_done_callback(lambda task: self._finished(slot, task))
        self._slots.append(slot)

    def _finished(self, slot: _Slot, task: asyncio.Task[None]) -> None:
        self._slots.remove(slot)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            if slot.current is not None:
                self.handled += 1
                self.durations[slot.channel].observe(time.perf_counter() - slot.started)
        elif isinstance(error, LayerClosed) and self._stopping.is_set():
            return
        else:
            self.failed += 1
            self.failures[slot.channel] += 1
            if slot.current is not None:
                self.durations[slot.channel].observe(time.perf_counter() - slot.started)
            if slot.received == 0:
                logger.error(
                    "the application for channel %r failed before taking a message; stopping "
                    "the worker",
                    slot.channel,
                    exc_info=error,
                )
                failure = WorkerError(
                    f"the application for channel {slot.channel!r} failed at start: {error!r}"
                )
                failure.__cause__ = error
                self._fail(failure)
                return
            message_type = slot.current.get("type") if slot.current else None
            logger.error(
                "worker: handling a %r message on channel %r failed",
                message_type,
                slot.channel,
                exc_info=error,
                extra={"channel": slot.channel},
            )
        if not self._stopping.is_set():
            self._spawn(_Slot(slot.channel))

    async def _drain(self, layer: BaseChannelLayer) -> None:
        # Idle instances (waiting for a message) end now; the others finish theirs. A
        # cancelled task is not done until it has run once more: counted by idleness.
        busy = [slot for slot in self._slots if not slot.idle and slot.task is not None]
        for slot in list(self._slots):
            if slot.idle and slot.task is not None:
                slot.task.cancel()
        busy = [slot for slot in busy if slot.task is not None and not slot.task.done()]
        if busy:
            logger.info(
                "worker: waiting up to %g s for %d message(s) in progress",
                self.shutdown_timeout,
                len(busy),
            )
        deadline = time.monotonic() + self.shutdown_timeout
        tasks = [slot.task for slot in busy if slot.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for slot in busy:
            if slot.task is None or slot.task.done():
                continue
            held = slot.current
            slot.task.cancel()
            await asyncio.gather(slot.task, return_exceptions=True)
            if held is not None and not slot.idle:
                self.handed_back += 1
                try:
                    await layer.send(slot.channel, held)
                    logger.warning(
                        "worker: a %r message on %r did not finish within %g s; handed it back "
                        "to the channel",
                        held.get("type"),
                        slot.channel,
                        self.shutdown_timeout,
                    )
                except Exception as exc:
                    logger.error(
                        "worker: a %r message on %r did not finish and could not be handed "
                        "back (%r); it is lost: %r",
                        held.get("type"),
                        slot.channel,
                        exc,
                        held,
                    )
        remaining = [slot.task for slot in self._slots if slot.task is not None]
        if remaining:
            await asyncio.gather(*remaining, return_exceptions=True)
        logger.info(
            "worker stopped: %d handled, %d failed, %d handed back",
            self.handled,
            self.failed,
            self.handed_back,
        )
