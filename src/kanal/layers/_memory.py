"""The in-memory channel layer: process-local, the embedded default (``memory://``)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from kanal.exceptions import ChannelFull, LayerClosed
from kanal.layers._base import (
    DEFAULT_CAPACITY,
    DEFAULT_EXPIRY,
    DEFAULT_GROUP_EXPIRY,
    BaseChannelLayer,
    Message,
)
from kanal.layers._binding import LoopBoundLayer
from kanal.layers._codec import DEFAULT_MAX_MESSAGE_SIZE
from kanal.layers._history import POSITION_KEY, GroupHistories, History, Position
from kanal.layers._names import require_valid_channel_name, require_valid_group_name
from kanal.layers._options import history_list
from kanal.layers._stats import ChannelStats, LayerStats

__all__ = ["InMemoryChannelLayer"]

# The sweep that frees expired messages and memberships runs at most this often. Expiry is
# exact regardless: receive and send check the messages they touch; the sweep only returns
# the memory of channels nobody touches any more.
_SWEEP_GRANULARITY = 1.0


class _Channel:
    """One channel's messages (``(deadline, bytes)``, oldest first) and waiting receivers."""

    __slots__ = ("capacity", "in_heap", "messages", "name", "receivable", "stats", "waiters")

    def __init__(self, name: str, capacity: int, stats: ChannelStats) -> None:
        self.name = name
        self.capacity = capacity
        self.stats = stats
        self.messages: deque[tuple[float, bytes]] = deque()
        self.waiters: deque[asyncio.Future[tuple[float, bytes]]] = deque()
        self.in_heap = False
        # The name was checked for receiving (a name ending in "!" may be sent to only).
        self.receivable = False


class InMemoryChannelLayer(LoopBoundLayer):
    """A channel layer inside one process, for development, tests and single-process apps.

    Drop-in for ``channels.layers.InMemoryChannelLayer`` (same constructor keywords).

    Costs: ``send`` and ``receive`` are O(1); ``group_send`` is O(members) with the message
    serialised once. No operation scans all channels: expiry is exact for the messages an
    operation touches, and a timer-driven sweep (a heap ordered by deadline) frees whatever
    nobody touches.

    The layer's state lives on the event loop that first used it. Calls from coroutines on
    another running loop are forwarded to it, so one instance can serve a server's loop and
    a thread with a loop of its own (``async_to_sync``) at once.

    ``clock`` is what expiry is measured by (seconds, ``time.monotonic`` by default); tests
    pass a clock they move forward by hand instead of waiting for real time to pass.

    ``history={"room.*": {"size": 100, "ttl": 300}}`` keeps the last messages of matching
    groups (docs/history.md); the history lives as long as the layer, so a restarted
    process starts a new epoch.

    Presence (``docs/presence.md``) is kept here too, with the same heartbeats and expiry
    as on a shared backend.
    """

    extensions: ClassVar[list[str]] = ["groups", "flush", "presence"]
    shared_across_processes: ClassVar[bool] = False
    supports_history: ClassVar[bool] = True
    url_options: ClassVar[dict[str, Callable[[str], Any]]] = {
        **BaseChannelLayer.url_options,
        "history": history_list,
    }

    def __init__(
        self,
        *,
        expiry: float = DEFAULT_EXPIRY,
        group_expiry: float = DEFAULT_GROUP_EXPIRY,
        capacity: int = DEFAULT_CAPACITY,
        channel_capacity: Any = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            max_message_size=max_message_size,
            **kwargs,
        )
        self._clock = clock
        self._channels: dict[str, _Channel] = {}
        self._groups: dict[str, dict[str, float]] = {}
        # (deadline, channel name) for every non-empty channel; (deadline, group, channel)
        # for every membership. Stale entries are re-checked against the live state on pop.
        self._channel_heap: list[tuple[float, str]] = []
        self._group_heap: list[tuple[float, str, str]] = []
        # Heap entries of memberships discarded since the heap was last rebuilt. A server
        # discards one membership per closed connection; without a rebuild their entries
        # would stay until group_expiry (a day by default), one per connection ever made.
        self._group_heap_stale = 0
        # Channels a receive left idle; the next sweep forgets those still idle. Forgetting
        # them at once made a receiver that comes straight back (the usual case) re-create
        # its channel on every message: measured at 10-20% of group fan-out throughput.
        self._idle: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._client = secrets.token_hex(6)
        self._counter = itertools.count(1)
        self._histories = GroupHistories(clock)
        # Presence: group -> ref -> (deadline, data), and each group's earliest deadline
        # (possibly stale low: a write scans the group only once it has passed).
        self._presences: dict[str, dict[str, tuple[float, bytes]]] = {}
        self._presence_due: dict[str, float] = {}
        # Channels discarded by their receiver -> until when a send to them could still
        # come (the expiry), oldest first: such sends are freed and counted, not queued.
        self._discarded: dict[str, float] = {}

    # -- loop binding (see kanal.layers._binding) -------------------------------------------

    def _bound(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tie the state to ``loop``; waiters of a previous, dead loop are dropped."""
        for channel in self._channels.values():
            channel.waiters.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = float("inf")
        self._schedule_sweep(loop)

    # -- channels --------------------------------------------------------------------------

    def _channel(self, name: str) -> _Channel:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel(
                name, self.get_capacity(name), self._book.channel(name)
            )
        return channel

    def add_channel_capacity(self, pattern: str | re.Pattern[str], capacity: int) -> None:
        """As the base's, and channels that exist already take the new capacity too."""
        super().add_channel_capacity(pattern, capacity)
        for name, channel in self._channels.items():
            channel.capacity = self.get_capacity(name)

    def _trim(self, channel: _Channel, now: float) -> None:
        """Discard the channel's expired messages (they are oldest first)."""
        messages = channel.messages
        expired = 0
        while messages and messages[0][0] <= now:
            messages.popleft()
            expired += 1
        if expired:
            channel.stats.expired += expired
            self._book.totals.expired += expired

    def _put(self, channel: _Channel, deadline: float, data: bytes) -> None:
        """Hand ``data`` to a waiting receiver, or queue it (capacity already checked)."""
        waiters = channel.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result((deadline, data))
                return
        channel.messages.append((deadline, data))
        if not channel.in_heap:
            channel.in_heap = True
            heapq.heappush(self._channel_heap, (deadline, channel.name))
            if deadline < self._timer_at:
                self._schedule_sweep()

    def _forget_if_idle(self, channel: _Channel) -> None:
        if not channel.messages and not channel.waiters and not channel.in_heap:
            self._channels.pop(channel.name, None)

    async def send(self, channel: str, message: Message) -> None:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self.send(channel, message))
        self._check_open()
        require_valid_channel_name(channel)
        self._send_here(channel, message)

    def _send_here(self, channel: str, message: Message) -> None:
        """``send``'s work on the home loop, the channel's name checked."""
        data = self.codec.encode(message, channel)
        now = self._clock()
        if self._discarded and self._was_discarded(channel, now):
            target_stats = self._book.channel(channel)
            target_stats.sent += 1
            self._book.totals.sent += 1
            self._book.discard(channel, 1)
            return
        target = self._channel(channel)
        if len(target.messages) >= target.capacity:
            self._trim(target, now)
            if len(target.messages) >= target.capacity:
                raise ChannelFull(
                    f"channel {channel!r} is full ({target.capacity} messages waiting); "
                    "the message was not sent",
                    channel=channel,
                    capacity=target.capacity,
                )
        self._put(target, now + self.expiry, data)
        target.stats.sent += 1
        self._book.totals.sent += 1

    async def receive(self, channel: str) -> Message:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            handed = await self._take_home(
                lambda: self._receive_item(channel), lambda item: self._give_back(channel, item)
            )
            return self.codec.decode(handed[1])
        # _receive_item's steps written out: one coroutine per receive, not two.
        source = self._receivable(channel)
        item = self._take(source) if source.messages else None
        if item is None:
            waiter = self._wait(source)
            try:
                item = await waiter
            except BaseException:
                self._abandon(source, waiter)
                raise
        self._received(source)
        return self.codec.decode(item[1])

    def receive_nowait(self, channel: str) -> Message | None:
        """As the base's: the next message if the channel holds one (on the home loop)."""
        if self._closed or asyncio._get_running_loop() is not self._loop:
            return None
        source = self._channels.get(channel)
        if source is None or not source.messages or source.waiters:
            return None
        messages = source.messages
        self._trim(source, self._clock())
        if not messages:
            return None
        item = messages.popleft()
        source.stats.received += 1
        self._book.totals.received += 1
        if not messages and not source.in_heap:
            idle = self._idle
            if not idle:
                idle.add(channel)
                self._schedule_sweep()
            else:
                idle.add(channel)
        return self.codec.decode(item[1])

    def _give_back(self, channel: str, item: tuple[float, bytes]) -> None:
        """Undo a receive whose caller was gone: the message is first in line again."""
        if self._closed:
            return
        source = self._channel(channel)
        self._requeue(source, item)
        source.stats.received -= 1
        self._book.totals.received -= 1

    async def _receive_item(self, channel: str) -> tuple[float, bytes]:
        """Take the next ``(deadline, data)`` of ``channel`` (on the home loop)."""
        source = self._receivable(channel)
        item = self._take(source) if source.messages else None
        if item is None:
            waiter = self._wait(source)
            try:
                item = await waiter
            except BaseException:
                self._abandon(source, waiter)
                raise
        self._received(source)
        return item

    # The steps of a receive, apart so that a backend's receive can await the waiter itself
    # (one coroutine per receive: a second one costs as much as the steps together).

    def _receivable(self, channel: str) -> _Channel:
        """``channel``'s entry, for a receive on the home loop (checked, no longer discarded)."""
        try:
            source = self._channels.get(channel)
        except TypeError:  # not a name at all: the check below says so
            source = None
        # The common case, a channel received from before, in a few checks. An entry marked
        # receivable is never a discarded one: discard_channel deletes the entry, and only
        # the slow path below (which takes the discard back) marks one.
        if source is not None and source.receivable and not self._closed:
            return source
        self._check_open()
        require_valid_channel_name(channel, receive=True)
        if self._discarded:
            # Received from again: no longer discarded, what is sent to it is kept.
            self._discarded.pop(channel, None)
        source = self._channel(channel)
        source.receivable = True
        return source

    def _take(self, source: _Channel) -> tuple[float, bytes] | None:
        """The next unexpired message of ``source``, or ``None``."""
        messages = source.messages
        if messages:
            self._trim(source, self._clock())
            if messages:
                return messages.popleft()
        return None

    def _wait(self, source: _Channel) -> asyncio.Future[tuple[float, bytes]]:
        """A future the next message of ``source`` will be handed to."""
        assert self._loop is not None
        waiter: asyncio.Future[tuple[float, bytes]] = self._loop.create_future()
        source.waiters.append(waiter)
        return waiter

    def _abandon(self, source: _Channel, waiter: asyncio.Future[tuple[float, bytes]]) -> None:
        """The receive awaiting ``waiter`` was cancelled (or failed): lose nothing."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            # A message was handed to us just as we were cancelled: give it back, to the
            # front, so that it is neither lost nor reordered.
            self._requeue(source, waiter.result())
        else:
            with contextlib.suppress(ValueError):
                source.waiters.remove(waiter)
            self._forget_if_idle(source)

    def _received(self, source: _Channel) -> None:
        """Count a message taken from ``source``; an emptied channel may be forgotten."""
        source.stats.received += 1
        self._book.totals.received += 1
        if not source.messages and not source.waiters and not source.in_heap:
            idle = self._idle
            if not idle:
                idle.add(source.name)
                self._schedule_sweep()
            else:
                idle.add(source.name)

    def _requeue(self, channel: _Channel, item: tuple[float, bytes]) -> None:
        waiters = channel.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        channel.messages.appendleft(item)
        if not channel.in_heap:
            channel.in_heap = True
            heapq.heappush(self._channel_heap, (item[0], channel.name))
            if item[0] < self._timer_at:
                self._schedule_sweep()

    async def discard_channel(self, channel: str) -> None:
        """As the base's: the channel's messages are freed now, and later sends to it."""
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self.discard_channel(channel))
        if self._closed:
            return
        require_valid_channel_name(channel, receive=True)
        now = self._clock()
        source = self._channels.get(channel)
        if source is not None:
            self._trim(source, now)
            if source.messages:
                self._book.discard(channel, len(source.messages))
                source.messages.clear()
            if source.waiters:
                # A receive still waits on it: the channel is in use after all, and what
                # comes next is that receiver's (only what waited was freed).
                return
            del self._channels[channel]
        self._discarded.pop(channel, None)  # (re)inserted last: the dict stays in order
        self._discarded[channel] = now + self.expiry
        self._forget_discarded(now)

    def _was_discarded(self, channel: str, now: float) -> bool:
        self._forget_discarded(now)
        return channel in self._discarded

    def _forget_discarded(self, now: float) -> None:
        """Drop the discarded names whose last possible message has expired."""
        discarded = self._discarded
        while discarded:
            name, until = next(iter(discarded.items()))
            if until > now:
                break
            del discarded[name]

    async def new_channel(self, prefix: str = "specific") -> str:
        self._check_open()
        name = f"{prefix}.{self._client}!{next(self._counter):x}{secrets.token_hex(4)}"
        return require_valid_channel_name(name)

    # -- groups ----------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self.group_add(group, channel))
        self._check_open()
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        members = self._groups.get(group)
        if members is None:
            members = self._groups[group] = {}
        deadline = self._clock() + self.group_expiry
        known = channel in members
        members[channel] = deadline
        if not known:
            # A renewal only moves the deadline in the dict; the sweep re-pushes it then.
            heapq.heappush(self._group_heap, (deadline, group, channel))
            if deadline < self._timer_at:
                self._schedule_sweep()

    async def group_discard(self, group: str, channel: str) -> None:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self.group_discard(group, channel))
        self._check_open()
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        members = self._groups.get(group)
        if members is not None and members.pop(channel, None) is not None:
            if not members:
                del self._groups[group]
            self._group_heap_stale += 1
            if self._group_heap_stale > 1024 and 2 * self._group_heap_stale > len(self._group_heap):
                self._rebuild_group_heap()

    def _rebuild_group_heap(self) -> None:
        """One heap entry per live membership (amortised O(1) per discard)."""
        self._group_heap = [
            (deadline, group, name)
            for group, members in self._groups.items()
            for name, deadline in members.items()
        ]
        heapq.heapify(self._group_heap)
        self._group_heap_stale = 0

    async def group_send(self, group: str, message: Message) -> None:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self.group_send(group, message))
        self._check_open()
        require_valid_group_name(group)
        policy = self.history_policy(group) if self.history else None
        if policy is None:
            data = self.codec.encode(message, f"group {group}")
        else:
            # Encoded with its position, then kept: what members get and what a later
            # group_history returns are the same bytes.
            position = self._histories.next_position(group)
            data = self.codec.encode({**message, POSITION_KEY: str(position)}, f"group {group}")
            self._histories.append(group, policy, data)
        stats = self._book.group(group)
        stats.sent += 1
        totals = self._book.totals
        totals.group_sends += 1
        members = self._groups.get(group)
        if not members:
            return
        now = self._clock()
        deadline = now + self.expiry
        channels = self._channels
        delivered = 0
        expired_members: list[str] = []
        for name, member_deadline in members.items():
            if member_deadline <= now:
                expired_members.append(name)
                continue
            target = channels.get(name)
            if target is None:
                if self._discarded and self._was_discarded(name, now):
                    self._book.discard(name, 1)
                    continue
                target = self._channel(name)
            if len(target.messages) >= target.capacity:
                self._trim(target, now)
                if len(target.messages) >= target.capacity:
                    target.stats.dropped += 1
                    stats.dropped += 1
                    totals.dropped += 1
                    self._drops.dropped(group, name, target.capacity)
                    continue
            self._put(target, deadline, data)
            target.stats.sent += 1
            delivered += 1
        stats.delivered += delivered
        totals.sent += delivered
        for name in expired_members:
            del members[name]
        if not members:
            del self._groups[group]

    async def group_history(
        self, group: str, since: Position | str | None = None, *, limit: int | None = None
    ) -> History:
        """As the base's (docs/history.md): from this process's store."""
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self.group_history(group, since, limit=limit))
        self._check_open()
        require_valid_group_name(group)
        policy = self._require_history(group)
        start = None if since is None else Position.parse(since)
        return self._histories.read(
            group, start, policy, self.codec.decode, self._history_limit(limit)
        )

    # -- presence (the store behind kanal.layers._presence) ------------------------------------

    async def _presence_write(
        self,
        group: str,
        add: Sequence[tuple[str, bytes]],
        renew: Sequence[str],
        remove: Sequence[str],
        ttl: float,
    ) -> tuple[list[str], list[tuple[str, bytes]]]:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self._presence_write(group, add, renew, remove, ttl))
        self._check_open()
        now = self._clock()
        entries = self._presences.setdefault(group, {})
        gone = self._presence_expire(group, entries, now)
        deadline = now + ttl
        absent: list[str] = []
        for ref, data in add:
            if ref not in entries:
                absent.append(ref)
            entries[ref] = (deadline, data)
        for ref in renew:
            entry = entries.get(ref)
            if entry is None:
                absent.append(ref)
            else:
                entries[ref] = (deadline, entry[1])
        for ref in remove:
            entry = entries.pop(ref, None)
            if entry is not None:
                gone.append((ref, entry[1]))
        if entries:
            if add:
                self._presence_due[group] = min(self._presence_due.get(group, deadline), deadline)
        else:
            del self._presences[group]
            self._presence_due.pop(group, None)
        return absent, gone

    def _presence_expire(
        self, group: str, entries: dict[str, tuple[float, bytes]], now: float
    ) -> list[tuple[str, bytes]]:
        """Remove ``group``'s expired entries (a scan only once its earliest deadline passed)."""
        if self._presence_due.get(group, now) > now:
            return []
        gone = [(ref, data) for ref, (deadline, data) in entries.items() if deadline <= now]
        for ref, _ in gone:
            del entries[ref]
        self._presence_due[group] = min(
            (deadline for deadline, _ in entries.values()), default=float("inf")
        )
        return gone

    async def _presence_read(self, group: str) -> list[tuple[str, bytes]]:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self._presence_read(group))
        self._check_open()
        now = self._clock()
        entries = self._presences.get(group, {})
        return [(ref, data) for ref, (deadline, data) in entries.items() if deadline > now]

    # -- expiry sweep ----------------------------------------------------------------------

    def _schedule_sweep(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if loop is None:
            loop = self._loop
        if loop is None or loop.is_closed():
            return
        heads = []
        if self._channel_heap:
            heads.append(self._channel_heap[0][0])
        if self._group_heap:
            heads.append(self._group_heap[0][0])
        if self._idle:
            heads.append(0.0)  # as soon as the granularity allows
        if not heads:
            return
        at = max(min(heads), self._clock() + _SWEEP_GRANULARITY)
        if self._timer is not None:
            if at >= self._timer_at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_later(at - self._clock(), self._sweep)

    def _sweep(self) -> None:
        """Free expired messages and memberships whose deadline has passed."""
        self._timer = None
        self._timer_at = float("inf")
        now = self._clock()
        idle, self._idle = self._idle, set()
        for name in idle:
            channel = self._channels.get(name)
            if channel is not None:
                self._forget_if_idle(channel)
        heap = self._channel_heap
        while heap and heap[0][0] <= now:
            _, name = heapq.heappop(heap)
            channel = self._channels.get(name)
            if channel is None:
                continue
            self._trim(channel, now)
            if channel.messages:
                heapq.heappush(heap, (channel.messages[0][0], name))
            else:
                channel.in_heap = False
                self._forget_if_idle(channel)
        gheap = self._group_heap
        while gheap and gheap[0][0] <= now:
            _, group, name = heapq.heappop(gheap)
            members = self._groups.get(group)
            if members is None:
                continue
            deadline = members.get(name)
            if deadline is None:
                continue
            if deadline <= now:
                del members[name]
                if not members:
                    del self._groups[group]
            else:
                heapq.heappush(gheap, (deadline, group, name))
        self._schedule_sweep()

    # -- lifecycle -------------------------------------------------------------------------

    async def flush(self) -> None:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(self.flush)
        self._check_open()
        # Channels with waiting receivers stay, so those receivers still get later messages.
        self._channels = {
            name: channel for name, channel in self._channels.items() if channel.waiters
        }
        for channel in self._channels.values():
            channel.messages.clear()
            channel.in_heap = False
        self._groups.clear()
        self._channel_heap.clear()
        self._group_heap.clear()
        self._group_heap_stale = 0
        self._idle.clear()
        self._discarded.clear()
        self._histories.clear()
        self._presences.clear()
        self._presence_due.clear()
        if self._presence is not None:
            self._presence.clear()
        self._book.clear()

    async def close(self) -> None:
        if self._closed:
            return
        if (
            self._loop is not None
            and asyncio.get_running_loop() is not self._loop
            and not self._claim()
        ):
            return await self._forward(self.close)
        await super().close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        error = LayerClosed(f"{type(self).__name__} was closed while this receive waited")
        for channel in self._channels.values():
            while channel.waiters:
                waiter = channel.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(error)
        self._channels.clear()
        self._groups.clear()
        self._channel_heap.clear()
        self._group_heap.clear()
        self._histories.clear()
        self._presences.clear()

    def local_groups(self) -> dict[str, int]:
        now = self._clock()
        counts = {g: sum(d > now for d in members.values()) for g, members in self._groups.items()}
        return {group: count for group, count in counts.items() if count}

    def stats(self) -> LayerStats:
        snapshot = super().stats()
        for name, channel in self._channels.items():
            entry = snapshot.channels.get(name)
            if entry is None:
                # A live channel whose counters the book evicted (its stats are fetched
                # once, when the channel is created, so its use does not refresh them).
                s = channel.stats
                entry = snapshot.channels[name] = ChannelStats(
                    s.sent, s.received, s.dropped, s.expired
                )
            entry.pending = len(channel.messages)
        return snapshot
