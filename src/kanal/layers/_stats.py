"""Counters every layer keeps, so that no message is lost without a trace.

A layer counts, per channel and per group, what it sent, received, dropped and let expire;
:meth:`BaseChannelLayer.stats` returns a snapshot. Drops are also logged at WARNING, rate
limited so that a flood of drops costs one line per interval, not one per message.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
import weakref
from dataclasses import dataclass, field

from kanal._histogram import Histogram, HistogramSnapshot

__all__ = ["ChannelStats", "DropLog", "GroupStats", "LayerStats", "StatsBook"]

logger = logging.getLogger("kanal.layers")


@dataclass(slots=True)
class ChannelStats:
    """What one layer instance did with one channel."""

    sent: int = 0
    received: int = 0
    dropped: int = 0  # group_send found the channel full
    expired: int = 0  # messages that waited longer than the layer's expiry
    pending: int = 0  # messages waiting now, where the backend knows (0 if unknown)
    # Taken but refused, not received: undecodable (a wrong encryption key, say).
    refused: int = 0
    # Of ``dropped``: could not be sent because the layer's backend was unreachable.
    unavailable: int = 0
    # Waiting in the channel, or sent to it later, after its receiver discarded it (a
    # connection that closed): never to be received, so freed at once and counted here.
    discarded: int = 0


@dataclass(slots=True)
class GroupStats:
    """What one layer instance did with one group."""

    sent: int = 0  # group_send calls
    delivered: int = 0  # messages put into members' channels
    dropped: int = 0  # members skipped because their channel was full, or messages lost
    # Of ``dropped``: group sends that could not be sent, the backend unreachable (one per
    # message: the members it would have reached are not known to the sender).
    unavailable: int = 0


@dataclass(slots=True)
class LayerStats:
    """A snapshot of a layer's counters (see :meth:`BaseChannelLayer.stats`).

    ``channels`` and ``groups`` hold the most recently used names (up to the book's
    ``max_names``); the totals count everything since the layer was created.
    """

    sent: int = 0
    received: int = 0
    dropped: int = 0
    expired: int = 0
    group_sends: int = 0
    #: Messages taken from a channel but refused as undecodable (not counted as received).
    refused: int = 0
    #: Of ``dropped``: sends and group sends that failed with the backend unreachable.
    unavailable: int = 0
    #: Messages freed unread because their channel was discarded (its receiver closed).
    discarded: int = 0
    channels: dict[str, ChannelStats] = field(default_factory=dict)
    groups: dict[str, GroupStats] = field(default_factory=dict)
    #: Seconds per round trip to the backend (one pipeline of commands), for backends that
    #: make them (Redis); None for the in-memory layer.
    round_trips: HistogramSnapshot | None = None


class StatsBook:
    """Mutable counters behind :class:`LayerStats`.

    Per-name counters are kept for at most ``max_names`` channels and as many groups: a
    server creates one channel per connection, and counters must not outlive them without
    bound. The oldest names are forgotten first; the totals never forget.
    """

    def __init__(self, max_names: int = 10_000) -> None:
        self.max_names = max_names
        self.totals = LayerStats()
        self._channels: dict[str, ChannelStats] = {}
        self._groups: dict[str, GroupStats] = {}
        #: The backend's round trips, observed by backends that make them.
        self.round_trips = Histogram()

    def channel(self, name: str) -> ChannelStats:
        """The counters of channel ``name``, created on first use."""
        stats = self._channels.pop(name, None)
        if stats is None:
            if len(self._channels) >= self.max_names:
                del self._channels[next(iter(self._channels))]
            stats = ChannelStats()
        # (Re)inserted last: the dict's order is least recently used first, so a busy
        # worker channel keeps its counters however many connections come and go.
        self._channels[name] = stats
        return stats

    def group(self, name: str) -> GroupStats:
        """The counters of group ``name``, created on first use."""
        stats = self._groups.pop(name, None)
        if stats is None:
            if len(self._groups) >= self.max_names:
                del self._groups[next(iter(self._groups))]
            stats = GroupStats()
        self._groups[name] = stats
        return stats

    def snapshot(self) -> LayerStats:
        """A copy of every counter, safe to keep and compare."""
        t = self.totals
        return LayerStats(
            sent=t.sent,
            received=t.received,
            dropped=t.dropped,
            expired=t.expired,
            group_sends=t.group_sends,
            refused=t.refused,
            unavailable=t.unavailable,
            discarded=t.discarded,
            channels={
                name: ChannelStats(
                    s.sent,
                    s.received,
                    s.dropped,
                    s.expired,
                    s.pending,
                    s.refused,
                    s.unavailable,
                    s.discarded,
                )
                for name, s in self._channels.items()
            },
            groups={
                name: GroupStats(s.sent, s.delivered, s.dropped, s.unavailable)
                for name, s in self._groups.items()
            },
            round_trips=self.round_trips.snapshot() if any(self.round_trips.counts) else None,
        )

    def refuse(self, channel: str, error: Exception) -> None:
        """A message taken from ``channel`` (and counted as received) that could not be
        decoded: counted as refused instead, and logged. Each one is logged: it means
        misconfigured processes (keys that differ), which must not stay unnoticed."""
        stats = self.channel(channel)
        stats.received -= 1
        stats.refused += 1
        self.totals.received -= 1
        self.totals.refused += 1
        logger.warning(
            "refused an undecodable message on %r: %s", channel, error, extra={"channel": channel}
        )

    def unavailable(self, channel: str | None, group: str | None) -> None:
        """A send to ``channel`` (or a group send to ``group``) that could not be sent,
        the backend unreachable: counted as dropped, with that reason."""
        totals = self.totals
        totals.dropped += 1
        totals.unavailable += 1
        if channel is not None:
            stats = self.channel(channel)
            stats.dropped += 1
            stats.unavailable += 1
        if group is not None:
            gstats = self.group(group)
            gstats.dropped += 1
            gstats.unavailable += 1

    def discard(self, channel: str, count: int) -> None:
        """``count`` messages of ``channel`` freed unread: its receiver discarded it."""
        self.channel(channel).discarded += count
        self.totals.discarded += count

    def clear(self) -> None:
        """Forget every counter (used by ``flush``)."""
        self.totals = LayerStats()
        self._channels.clear()
        self._groups.clear()


class DropLog:
    """Logs dropped messages at WARNING, at most once per ``interval`` seconds.

    The first drop is logged at once. Drops within the interval after it are counted, and one
    summary line reports them when the interval ends (or when the layer closes), so the last
    drops of a burst are never silent either.
    """

    def __init__(self, interval: float = 5.0, log: logging.Logger = logger) -> None:
        self.interval = interval
        self.log = log
        self._last = -interval
        # reason -> (count held back, latest example)
        self._held: dict[str, tuple[int, str]] = {}
        self._timer: asyncio.TimerHandle | None = None
        _logs.add(self)

    def dropped(self, group: str, channel: str, capacity: int) -> None:
        """Record one message for ``channel`` dropped by ``group_send`` to ``group``."""
        self._record(
            "for full channels",
            f"group {group!r}, channel {channel!r}",
            "group_send to %r dropped a message for %r: channel full (capacity %d)",
            group,
            channel,
            capacity,
            context={"group": group, "channel": channel},
        )

    def full(self, channel: str, capacity: int) -> None:
        """Record one message ``send`` sent to ``channel`` that the receiving process found
        full (a layer that checks capacity where the channel lives, after ``send``)."""
        self._record(
            "for full channels",
            f"channel {channel!r}",
            "send to %r dropped a message: the channel was full where it is received (capacity %d)",
            channel,
            capacity,
        )

    def unavailable(self, operation: str, target: str, error: BaseException) -> None:
        """Record one message that ``operation`` (``send``, ``group_send``) to ``target``
        could not send: the layer's backend was unreachable."""
        self._record(
            "with the layer unavailable",
            f"{operation} to {target!r}",
            "%s to %r dropped a message: the layer is unavailable (%s)",
            operation,
            target,
            error,
        )

    def _record(
        self,
        reason: str,
        example: str,
        line: str,
        *args: object,
        context: dict[str, str] | None = None,
    ) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            if self._timer is not None:
                self._timer.cancel()
            self.flush()
            self._last = now
            self.log.warning(line, *args, extra=context)
            return
        count, _ = self._held.get(reason, (0, ""))
        self._held[reason] = (count + 1, example)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # flushed by the next drop that finds the interval over, or close()
            delay = max(0.0, self._last + self.interval - now)
            self._timer = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        """Log the drops held back so far, if any."""
        self._timer = None
        held, self._held = self._held, {}
        for reason, (count, example) in held.items():
            self.log.warning(
                "dropped %d more message(s) %s in the last %.0f s (latest: %s)",
                count,
                reason,
                self.interval,
                example,
            )
        if held:
            self._last = time.monotonic()

    def close(self) -> None:
        """Log what is held and cancel the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()


# Every drop log of the process, so that what they hold back is written when it exits: a
# server, a worker or a scheduler often ends without closing its layer, and its last
# drops would otherwise wait for a timer that never fires.
_logs: weakref.WeakSet[DropLog] = weakref.WeakSet()


def _flush_at_exit() -> None:
    for log in list(_logs):
        log._timer = None  # its loop is gone: the timer would never fire
        log.flush()


# Registered after logging's own shutdown hook (logging is imported first), so it runs
# before it: the handlers still write.
atexit.register(_flush_at_exit)
