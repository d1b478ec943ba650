"""Delayed and periodic messages: ``send_later`` and the :class:`Scheduler`.

Delayed messages travel to a scheduler through the layer (on ``kanal.scheduler``); the
scheduler holds them until they are due and then sends them on. Because it is a channel, each
delayed message is taken by exactly one scheduler however many run.

Periodic jobs fire on ticks aligned to the clock (every 60 s fires at :00 of each minute,
cron expressions at their times), so every scheduler computes the same ticks. Before sending,
a scheduler claims the tick by sending a token to a channel named after it whose capacity is
1: the layer accepts one token and refuses the others with ``ChannelFull``, so one scheduler
wins and the message goes out once, with no lock service beyond the layer itself.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kanal.exceptions import ChannelFull, ConfigError, LayerClosed
from kanal.layers import BaseChannelLayer, Message, get_channel_layer, require_valid_channel_name
from kanal.worker._lifecycle import Lifecycle

__all__ = ["SCHEDULER_CHANNEL", "Cron", "Every", "Job", "Scheduler", "send_later"]

logger = logging.getLogger("kanal.worker.scheduler")

#: The channel on which schedulers receive delayed messages.
SCHEDULER_CHANNEL = "kanal.scheduler"
_SCHEDULE_TYPE = "kanal.schedule"
_TICK_PREFIX = "kanal-tick."


@dataclass(frozen=True)
class Every:
    """Fire every ``seconds``, on multiples of it since the epoch (aligned across processes)."""

    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ConfigError(f"Every() needs a positive interval, not {self.seconds!r}")

    def next_after(self, now: float) -> float:
        """The first tick strictly after ``now`` (epoch seconds)."""
        return (math.floor(now / self.seconds) + 1) * self.seconds


@dataclass(frozen=True)
class Cron:
    """Fire at the times of a cron expression (``"*/5 * * * *"``), in UTC."""

    expression: str

    def __post_init__(self) -> None:
        from croniter import croniter

        if not croniter.is_valid(self.expression):
            raise ConfigError(f"not a valid cron expression: {self.expression!r}")

    def next_after(self, now: float) -> float:
        """The first time strictly after ``now`` (epoch seconds)."""
        from croniter import croniter

        result: float = croniter(self.expression, now).get_next(float)
        return result


@dataclass
class Job:
    """Send ``message`` to ``channel`` on ``schedule``; ``name`` identifies it in the claim."""

    name: str
    channel: str
    message: Message
    schedule: Every | Cron

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-zA-Z0-9_\-.]{1,40}", self.name):
            raise ConfigError(
                f"job name {self.name!r}: use 1-40 ASCII letters, digits, '-', '_' or '.'"
            )
        require_valid_channel_name(self.channel)
        if "!" in self.channel:
            raise ConfigError(
                f"job {self.name!r}: a schedule cannot target the process-specific channel "
                f"{self.channel!r}, which may be gone by the time it fires"
            )


async def send_later(
    channel: str,
    message: Message,
    delay: float,
    *,
    layer: BaseChannelLayer | None = None,
) -> None:
    """Send ``message`` to ``channel`` after ``delay`` seconds, through a running scheduler.

    The message is validated now (a bad one raises here, not later). It is held by one
    :class:`Scheduler` (``kanal scheduler``); with none running it waits in the scheduler
    channel up to the layer's expiry and is then lost like any unreceived message.
    """
    if layer is None:
        layer = get_channel_layer()
    require_valid_channel_name(channel)
    if not delay >= 0:
        raise ValueError(f"delay must be >= 0 seconds, not {delay!r}")
    layer.codec.encode(message, channel)  # refuse a bad message at the call, not at send time
    await layer.send(
        SCHEDULER_CHANNEL,
        {
            "type": _SCHEDULE_TYPE,
            "channel": channel,
            "due": time.time() + delay,
            "message": message,
        },
    )


@dataclass(order=True)
class _Delayed:
    due: float
    seq: int
    channel: str = field(compare=False)
    message: Message = field(compare=False)


class Scheduler(Lifecycle):
    """Runs periodic ``jobs`` and delivers messages sent with :func:`send_later`.

    Run several for availability: each delayed message is held by one of them, and each tick
    of a periodic job is sent by exactly one (see the module's docstring). A delayed message a
    scheduler holds when it stops is handed back to the scheduler channel for another one.
    :meth:`run` fires and delivers until :meth:`stop`; :meth:`serve` adds SIGTERM and SIGINT
    handlers that call :meth:`stop` (what ``kanal scheduler`` runs).
    """

    def __init__(
        self,
        jobs: Sequence[Job] = (),
        *,
        layer: BaseChannelLayer | None = None,
        accept_delayed: bool = True,
    ) -> None:
        names = [job.name for job in jobs]
        duplicates = {name for name in names if names.count(name) > 1}
        if duplicates:
            raise ConfigError(f"job names must be unique; repeated: {sorted(duplicates)}")
        super().__init__(layer)
        self.jobs = list(jobs)
        self.accept_delayed = accept_delayed
        self.fired = 0  # ticks this scheduler won and sent
        self._firing: asyncio.Future[None] | None = None  # the tick being sent
        self.skipped = 0  # ticks another scheduler had claimed
        self.delivered = 0  # delayed messages sent on
        self._delayed: list[_Delayed] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()

    # -- the lifecycle's steps ----------------------------------------------------------

    def _start(self, layer: BaseChannelLayer) -> list[asyncio.Task[None]]:
        # A tick's claim channel holds one token: the first scheduler's.
        layer.add_channel_capacity(re.compile(re.escape(_TICK_PREFIX)), 1)
        tasks = []
        if self.jobs:
            tasks.append(asyncio.create_task(self._fire_jobs(layer), name="kanal-scheduler-jobs"))
        if self.accept_delayed:
            tasks.append(asyncio.create_task(self._take(layer), name="kanal-scheduler-take"))
            tasks.append(asyncio.create_task(self._deliver(layer), name="kanal-scheduler-send"))
        logger.info(
            "scheduler firing %d job(s)%s (layer %r)",
            len(self.jobs),
            f" and delivering delayed messages from {SCHEDULER_CHANNEL}"
            if self.accept_delayed
            else "",
            layer,
        )
        return tasks

    # -- periodic jobs -------------------------------------------------------------------

    async def _fire_jobs(self, layer: BaseChannelLayer) -> None:
        now = time.time()
        heap = [(job.schedule.next_after(now), index) for index, job in enumerate(self.jobs)]
        heapq.heapify(heap)
        while True:
            due, index = heap[0]
            await asyncio.sleep(max(0.0, due - time.time()))
            heapq.heapreplace(heap, (self.jobs[index].schedule.next_after(due), index))
            # Shielded: a stop that lands during a send must not leave a message sent but
            # uncounted (a pipelined send may reach the layer after the cancel); _drain
            # waits for it.
            self._firing = asyncio.ensure_future(self._fire(layer, self.jobs[index], due))
            await asyncio.shield(self._firing)

    async def _fire(self, layer: BaseChannelLayer, job: Job, due: float) -> None:
        claim = f"{_TICK_PREFIX}{job.name}.{round(due * 1000)}"
        try:
            await layer.send(claim, {"type": "kanal.tick"})
        except ChannelFull:
            self.skipped += 1
            return
        try:
            await layer.send(job.channel, job.message)
            self.fired += 1
        except ChannelFull:
            logger.error(
                "job %r: channel %r is full; this tick's message was not sent",
                job.name,
                job.channel,
            )
        except Exception:
            logger.exception("job %r: sending to %r failed", job.name, job.channel)

    # -- delayed messages ----------------------------------------------------------------

    async def _take(self, layer: BaseChannelLayer) -> None:
        while True:
            request = await layer.receive(SCHEDULER_CHANNEL)
            try:
                item = _Delayed(
                    float(request["due"]),
                    next(self._seq),
                    str(request["channel"]),
                    dict(request["message"]),
                )
            except (KeyError, TypeError, ValueError):
                logger.error("ignored a malformed message on %s: %r", SCHEDULER_CHANNEL, request)
                continue
            heapq.heappush(self._delayed, item)
            self._wake.set()

    async def _deliver(self, layer: BaseChannelLayer) -> None:
        while True:
            self._wake.clear()
            if not self._delayed:
                await self._wake.wait()
                continue
            wait = self._delayed[0].due - time.time()
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()  # an earlier message may arrive meanwhile
                except TimeoutError:
                    pass
                continue
            item = heapq.heappop(self._delayed)
            try:
                await layer.send(item.channel, item.message)
                self.delivered += 1
            except ChannelFull:
                logger.error(
                    "a delayed %r message for %r was dropped: the channel is full",
                    item.message.get("type"),
                    item.channel,
                )
            except LayerClosed:
                heapq.heappush(self._delayed, item)
                raise

    async def _drain(self, layer: BaseChannelLayer) -> None:
        if self._firing is not None:
            await self._firing  # _fire handles its own errors
        # What this scheduler holds goes back to the scheduler channel for another one.
        if not self._delayed or layer.closed:
            if self._delayed:
                logger.error(
                    "scheduler stopped with %d delayed message(s) and a closed layer; lost",
                    len(self._delayed),
                )
            return
        held, self._delayed = self._delayed, []
        for item in held:
            try:
                await layer.send(
                    SCHEDULER_CHANNEL,
                    {
                        "type": _SCHEDULE_TYPE,
                        "channel": item.channel,
                        "due": item.due,
                        "message": item.message,
                    },
                )
            except Exception as exc:
                logger.error("could not hand back a delayed message for %r: %r", item.channel, exc)
        logger.info("scheduler handed back %d delayed message(s)", len(held))

    def describe(self) -> list[dict[str, Any]]:
        """The jobs and their next times, for logs and inspection."""
        now = time.time()
        return [
            {"job": job.name, "channel": job.channel, "next": job.schedule.next_after(now)}
            for job in self.jobs
        ]
