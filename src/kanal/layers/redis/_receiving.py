"""The receiving side: the per-process inbox drain, local buffers, capacity acks.

One task per process (per inbox) pops records in batches and hands each message to the
buffer of the channel it names; ``receive`` on a process-specific channel only looks at
that buffer. When a message ``send`` queued leaves the buffer (received, or expired) its
place in the channel's count is released in Redis, batched with every other release of the
same loop iteration. Group messages are not counted in Redis: this process enforces the
capacity of its channels on their backlog, marks a channel full in Redis when its backlog
reaches capacity (so that senders elsewhere refuse it) and clears the mark when it drains.

The :class:`Receiver` is given what it works with: the layer's counters, drop log, codec
and capacity rule when it is made, and the loop and shards of each binding
(:meth:`Receiver.bind`). It knows nothing else of the layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from kanal._backoff import Backoff
from kanal._tasks import detached_task
from kanal.exceptions import LayerClosed
from kanal.layers._codec import Decoded, MessageCodec
from kanal.layers._history import POSITION_KEY
from kanal.layers._names import require_valid_channel_name
from kanal.layers._stats import DropLog, StatsBook
from kanal.layers.redis._connection import Wire, quiet, unavailable_errors
from kanal.layers.redis._scripts import ACK, now_ms
from kanal.layers.redis._sharding import process_of
from kanal.layers.redis._topology import Shard, Shards

__all__ = ["Item", "LocalChannel", "Payload", "Receiver"]

logger = logging.getLogger("kanal.layers.redis")

# A drain's BLMPOP waits this long before it is re-issued. Long waits cost nothing (the
# server wakes the call when a record arrives); this only bounds how stale an idle
# connection can get.
_BLOCK = 5
# Records per BLMPOP: a burst of a thousand messages costs one round trip.
_BATCH = 1000
# How often a drain checks that Redis still holds its data (see _check_marker), and how
# long the marker lives: far above the interval, so only a data loss makes it vanish.
_CHECK_INTERVAL = 1.0
_MARKER_TTL_MS = 120_000
# The table of channels known here is purged of idle entries when it reaches this size
# (or twice its size after the last purge).
_MIN_LOCALS = 4096
# Releases of sent messages' places wait this long to travel together (other processes'
# senders see a channel this much fuller than it is).
_ACK_DELAY = 0.01
# A named channel's BLPOP waits this long; a puller whose receivers gave up holds its
# connection at most this long.
_PULL_BLOCK = 1.0
# Retries after Redis could not be reached: quick first ones, then at most one a second.
_RETRY_FIRST = 0.05
_RETRY_CEILING = 1.0

# What a receive returns: the sealed message, or a group message already decoded for
# several channels of this process (each receive then copies it).
Payload = bytes | Decoded
# (deadline ms, payload, counted): "counted" if ``send`` took a place in the channel's count
# in Redis, to be released when the message leaves the buffer.
Item = tuple[int, Payload, bool]


class LocalChannel:
    """One channel's messages buffered in this process, and its waiting receivers."""

    __slots__ = ("capacity", "full", "messages", "name", "process", "receivable", "waiters")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        # The name was checked for receiving (so a consumer's receives check it once).
        self.receivable = False
        self.process = process_of(name)
        self.capacity = capacity
        # The channel is marked full in Redis (the backlog reached capacity).
        self.full = False
        self.messages: deque[Item] = deque()
        self.waiters: deque[asyncio.Future[Item]] = deque()


class Receiver:
    """The receiving half of a :class:`RedisChannelLayer` on its event loop.

    ``book`` and ``drops`` count and log what it receives, drops and lets expire;
    ``capacity_of`` is the layer's capacity rule; ``expiry_ms`` the message expiry, which
    bounds how long a full mark is kept; ``on_data_loss`` is called when Redis is found to
    have lost its data, and returns how many memberships it restored.
    """

    def __init__(
        self,
        *,
        book: StatsBook,
        drops: DropLog,
        codec: MessageCodec,
        capacity_of: Callable[[str], int],
        expiry_ms: int,
        on_data_loss: Callable[[], int],
    ) -> None:
        self._book = book
        self._drops = drops
        self._codec = codec
        self._capacity_of = capacity_of
        self._expiry_ms = expiry_ms
        self._on_data_loss = on_data_loss
        #: Times a receive loop lost its Redis connection (each is logged).
        self.connection_losses = 0
        #: Times Redis was found to have lost its data (a restart without persistence).
        self.restarts_detected = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shards: Shards | None = None
        self._markers: set[str] = set()
        # The process whose release() kept the buffers for the next bind(), if any.
        self._kept_pid: int | None = None
        self._reset()

    def bind(self, loop: asyncio.AbstractEventLoop, shards: Shards) -> None:
        """Go on on ``loop`` (the running one) with ``shards``; the previous loop is gone.

        What :meth:`release` kept in this very process carries over: messages drained but
        not yet received, and the releases of places not yet sent. Anything else starts
        afresh (a forked child must not hand out its parent's messages).
        """
        if self._kept_pid == os.getpid():
            self._resume()
        else:
            self._reset()
        self._kept_pid = None
        self._loop = loop
        self._shards = shards
        heads = (self.channels.get(name) for name in self._buffered)
        earliest = min(
            (local.messages[0][0] for local in heads if local and local.messages), default=None
        )
        if earliest is not None:
            self._schedule_sweep(earliest)
        if self._acks:
            self._ack_scheduled = True
            loop.call_later(_ACK_DELAY, self._flush_acks)

    def detach(self) -> None:
        """Stop using the shards (the layer is closing them): nothing more is sent."""
        self._shards = None

    def _reset(self) -> None:
        #: The channels known here, by name (the layer's receive looks its own up inline).
        self.channels: dict[str, LocalChannel] = {}
        self._channels_limit = _MIN_LOCALS
        self._buffered: set[str] = set()
        self._acks: dict[str, dict[str, int]] = {}
        self._resume()

    def _resume(self) -> None:
        """Forget what belonged to the previous loop: tasks, timers, waiters."""
        for local in self.channels.values():
            local.waiters.clear()
        self._drains: dict[str, asyncio.Task[None]] = {}
        self._pullers: dict[str, asyncio.Task[None]] = {}
        self._ack_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._markers = set()
        self._closing = False

    def _live_shards(self) -> Shards:
        shards = self._shards
        if shards is None:
            raise LayerClosed("the layer was closed")
        return shards

    def _local(self, name: str) -> LocalChannel:
        local = self.channels.get(name)
        if local is None:
            if len(self.channels) >= self._channels_limit:
                self._purge_idle()
            local = self.channels[name] = LocalChannel(name, self._capacity_of(name))
        return local

    def _purge_idle(self) -> None:
        """Forget channels with nothing buffered and nobody waiting.

        Done in bulk when the table doubles, not after every receive: a consumer receives
        from the same channel again and again, and re-creating its entry each time costs
        more than the receive itself.
        """
        self.channels = {
            name: local
            for name, local in self.channels.items()
            if local.messages or local.waiters or local.full
        }
        self._channels_limit = max(_MIN_LOCALS, 2 * len(self.channels))

    def _forget_if_idle(self, local: LocalChannel) -> None:
        if not local.messages and not local.waiters and not local.full:
            self.channels.pop(local.name, None)

    # -- receive ---------------------------------------------------------------------------

    # The layer's receive calls the steps below itself (one coroutine less on the path of
    # every message); receive() puts them together for the other callers.

    async def receive(self, channel: str) -> Payload:
        """The next message of ``channel``, waiting for it if needed."""
        local = self.receivable(channel)
        item = self.take_item(local)
        if item is not None:
            return item[1]
        waiter = self.wait(local)
        try:
            item = await waiter
        except BaseException:
            self.abandon(local, waiter)
            raise
        return self.settle(local, item)

    def receivable(self, channel: str) -> LocalChannel:
        """The entry of ``channel``, its name checked for receiving (once per entry)."""
        local = self.channels.get(channel) if type(channel) is str else None
        if local is None or not local.receivable:
            require_valid_channel_name(channel, receive=True)
            local = self._local(channel)
            local.receivable = True
        return local

    def take_item(self, local: LocalChannel) -> Item | None:
        """Take the next buffered message of ``local`` (its place released), or ``None``."""
        messages = local.messages
        if not messages:
            return None
        if messages[0][0] <= time.time() * 1000:
            self._trim(local, now_ms())
            if not messages:
                return None
        # A consumer that is behind takes its backlog through here: no call per message.
        item = messages.popleft()
        if not messages:
            self._buffered.discard(local.name)
        if local.full:
            self._unmark(local)
        if item[2] and local.process is not None:
            self._ack(local.process, local.name)
        return item

    def wait(self, local: LocalChannel) -> asyncio.Future[Item]:
        """A future the next message of ``local`` will be handed to."""
        # asyncio.Future directly: loop.create_future() is one Python call more per wait.
        waiter: asyncio.Future[Item] = asyncio.Future(loop=self._loop)
        local.waiters.append(waiter)
        process = local.process
        if process is None:
            self._pull(local)
        else:
            drain = self._drains.get(process)
            if drain is None or drain.done():
                self.watch(process)
        return waiter

    def settle(self, local: LocalChannel, item: Item) -> Payload:
        """What a waiter was handed, its place released."""
        if local.process is not None:
            if item[2]:
                self._ack(local.process, local.name)
        else:
            self._forget_if_idle(local)  # named channels are often one-off (replies)
        return item[1]

    def abandon(self, local: LocalChannel, waiter: asyncio.Future[Item]) -> None:
        """The receive awaiting ``waiter`` was cancelled (or failed): lose nothing."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            # Handed a message just as we were cancelled: give it back, in front.
            self._give_back(local, waiter.result())
        else:
            with contextlib.suppress(ValueError):
                local.waiters.remove(waiter)
            self._forget_if_idle(local)

    def take(self, channel: str) -> Payload | None:
        """The next buffered message of ``channel``, or ``None``; never waits."""
        local = self.channels.get(channel)
        if local is None or local.process is None:
            return None
        item = self.take_item(local)
        return None if item is None else item[1]

    def _hand(self, local: LocalChannel, item: Item) -> bool:
        waiters = local.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return True
        return False

    def _buffer(self, local: LocalChannel, item: Item, front: bool = False) -> None:
        if front:
            local.messages.appendleft(item)
        else:
            local.messages.append(item)
        self._buffered.add(local.name)
        self._schedule_sweep(item[0])
        if not local.full and len(local.messages) >= local.capacity and local.process is not None:
            self._mark(local)

    def _mark(self, local: LocalChannel) -> None:
        """Tell senders elsewhere that ``local``'s backlog is at capacity."""
        local.full = True
        self._set_mark(local, "SADD")

    def _unmark(self, local: LocalChannel) -> None:
        """Clear the full mark once the backlog is below capacity again."""
        if len(local.messages) < local.capacity:
            local.full = False
            self._set_mark(local, "SREM")

    def _set_mark(self, local: LocalChannel, command: str) -> None:
        shards = self._shards
        if shards is None or local.process is None:
            return
        shard = shards.for_name(local.process)
        key = shard.key("f", local.process)
        shard.batcher.call(command, key, local.name).add_done_callback(quiet)
        if command == "SADD":
            # Only garbage collection of a dead process's marks: a live one clears its
            # marks itself, and its backlog cannot outlive the message expiry.
            ttl = max(2 * self._expiry_ms, 10_000)
            shard.batcher.call("PEXPIRE", key, ttl).add_done_callback(quiet)

    def put_back(self, channel: str, deadline: int, data: Payload) -> None:
        """A message a receive took for a caller that was gone: first in line again."""
        self._give_back(self._local(channel), (deadline, data, False))

    def _give_back(self, local: LocalChannel, item: Item) -> None:
        if self._hand(local, item):
            return
        if local.process is not None:
            self._buffer(local, item, front=True)
            return
        # A named channel is shared with other processes: put it back at the head of the
        # list rather than keep it here where only this process would ever see it.
        shards = self._shards
        if shards is None:
            return
        shard = shards.for_name(local.name)
        payload = item[1]
        if isinstance(payload, Decoded):  # not made for named channels; kept general
            payload = self._codec.encode(payload.fresh(), local.name)
        record = b"%d %s\n" % (item[0], local.name.encode()) + payload
        shard.batcher.call("LPUSH", shard.key("ch", local.name), record).add_done_callback(quiet)

    # -- the inbox drain -------------------------------------------------------------------

    def watch(self, process: str) -> None:
        """Make sure a task drains ``process``'s inbox into the local buffers."""
        task = self._drains.get(process)
        if task is None or task.done():
            self._drains[process] = detached_task(
                self._drain(process), name=f"kanal-redis-drain-{process}"
            )

    async def _drain(self, process: str) -> None:
        shards = self._live_shards()
        shard = shards.for_name(process)
        key = shard.key("in", process)
        marker = shard.key("alive", process)
        wire = Wire(shard.blocking) if isinstance(shard.blocking, Redis) else None
        try:
            await self._drain_loop(shards, shard, key, marker, wire)
        finally:
            if wire is not None:
                await wire.drop()

    async def _drain_loop(
        self, shards: Shards, shard: Shard, key: str, marker: str, wire: Wire | None
    ) -> None:
        failing = False
        retry = Backoff(_RETRY_FIRST, _RETRY_CEILING)
        checked = 0.0
        command = ("BLMPOP", _BLOCK, 1, key, "LEFT", "COUNT", _BATCH)
        while not self._closing:
            now = time.monotonic()
            if now - checked >= _CHECK_INTERVAL:
                checked = now
                self._check_marker(shard, marker)
            try:
                if wire is not None:
                    # The client has no socket timeout (see HostSpec.make_client).
                    async with asyncio.timeout(_BLOCK + shards.timeout):
                        reply = (await wire.run([command]))[0]
                    if isinstance(reply, Exception):
                        raise reply
                else:
                    reply = await shard.blocking.execute_command(*command)
            except unavailable_errors as exc:
                if not failing:
                    failing = True
                    self.connection_losses += 1
                    logger.warning(
                        "lost Redis at %s (%s); retrying. Messages queued in it may be lost "
                        "if it restarted.",
                        shard.name,
                        exc,
                    )
                await asyncio.sleep(retry.next())
                checked = 0.0
                continue
            except redis_errors.ResponseError as exc:
                logger.error("draining %s failed: %s", key, exc)
                await asyncio.sleep(1.0)
                continue
            except Exception:
                # Not an outage we know (a client library error on a half-closed
                # connection, say): the receivers of this process would wait forever if
                # the drain stopped, so say what happened and go on with a new connection.
                logger.exception("draining %s failed unexpectedly; retrying", key)
                if wire is not None:
                    await wire.drop()
                await asyncio.sleep(retry.next())
                continue
            retry.reset()  # once per batch of records, not per message
            if failing:
                failing = False
                logger.warning("Redis at %s is reachable again; receiving resumed", shard.name)
            if reply:
                self._dispatch(reply[1])

    def _check_marker(self, shard: Shard, marker: str) -> None:
        """Refresh this process's marker key; if it was gone, Redis lost its data.

        A restarted Redis without persistence forgets group memberships. The marker (set
        with an expiry far above the check interval) tells a restart from a quiet spell,
        even when the client library reconnected so quickly that no error surfaced.
        """
        first = marker not in self._markers
        future = shard.batcher.call("SET", marker, 1, "PX", _MARKER_TTL_MS, "GET")

        def done(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            self._markers.add(marker)
            if future.result() is None and not first:
                self.restarts_detected += 1
                restored = self._on_data_loss()
                logger.warning(
                    "Redis at %s lost its data (restarted?): messages queued there are "
                    "lost; %d group memberships of this process restored",
                    shard.name,
                    restored,
                )

        future.add_done_callback(done)

    def offer(self, channel: str, deadline: int, payload: bytes) -> bool:
        """A message for this process's own channel, sent by this process.

        Handed to a waiting receiver or buffered; False (nothing done) if the channel's
        backlog is at capacity.
        """
        local = self.channels.get(channel) or self._local(channel)
        item = (deadline, payload, False)
        if self._hand(local, item):
            return True
        if local.messages:
            self._trim(local, now_ms())
        if len(local.messages) >= local.capacity:
            return False
        self._buffer(local, item)
        return True

    def _dispatch(self, records: list[bytes]) -> None:
        now = now_ms()
        book = self._book
        for record in records:
            try:
                head, _, sealed = record.partition(b"\n")
                fields = head.split(b" ")
                deadline, slash, group = fields[0].partition(b"/")
                # A group message is not counted in Redis: this process enforces capacity.
                counted = not slash
                expired = int(deadline) <= now
                payload: Payload = sealed
                group, at, position = group.partition(b"@")
                if at and not expired:
                    # A group with history: its position goes into the message.
                    payload = self._positioned(sealed, position.decode(), len(fields) > 2)
                elif len(fields) > 2 and not expired:
                    # Several channels of this process have it: decode (and decrypt) once.
                    payload = self._decoded(sealed)
                item = (int(deadline), payload, counted)
                known = self.channels
                buffered = self._buffered
                kept = False
                for raw in fields[1:]:
                    name = raw.decode()
                    local = known.get(name) or self._local(name)
                    if expired:
                        book.channel(name).expired += 1
                        book.totals.expired += 1
                        if counted and local.process is not None:
                            self._ack(local.process, name)
                        self._forget_if_idle(local)
                        continue
                    # _hand, inlined: this loop runs once per member of a fan-out.
                    waiters = local.waiters
                    while waiters:
                        waiter = waiters.popleft()
                        if not waiter.done():
                            waiter.set_result(item)
                            break
                    else:
                        messages = local.messages
                        if counted or len(messages) < local.capacity:
                            # _buffer, inlined; the expiry sweep is scheduled once below.
                            messages.append(item)
                            buffered.add(name)
                            kept = True
                            if (
                                not local.full
                                and len(messages) >= local.capacity
                                and local.process is not None
                            ):
                                self._mark(local)
                        else:
                            self._drop(local, group.decode())
                if kept:
                    self._schedule_sweep(item[0])
            except Exception:
                # Not written by this layer (or a bug): skipped alone, so that the records
                # after it in the batch are still delivered and acknowledged.
                logger.exception("skipped a malformed record in the inbox: %r", record[:80])

    def _decoded(self, sealed: bytes) -> Payload:
        codec = self._codec
        if type(codec).decode is not MessageCodec.decode:
            # A codec of the user's may decode to other mutable types (sets, objects)
            # that Decoded would not copy: each receiver decodes for itself.
            return sealed
        try:
            return Decoded(codec.decode(sealed))
        except Exception:
            # Undecodable (a wrong key, say) or too deeply nested to copy: each receiver
            # decodes it for itself and gets the error, as for any other message.
            return sealed

    def _positioned(self, sealed: bytes, position: str, shared: bool) -> Payload:
        """The message of a group with history, with its position (from the record's
        header: the payload, maybe encrypted, is what the sender sealed)."""
        codec = self._codec
        try:
            message = codec.decode(sealed)
        except Exception:
            return sealed  # each receiver decodes it and gets the error
        message[POSITION_KEY] = position
        if not shared or type(codec).decode is MessageCodec.decode:
            try:
                return Decoded(message)
            except ValueError:
                pass  # too deep to copy: sealed again below, each receiver decodes
        return codec.encode(message)

    def _drop(self, local: LocalChannel, group: str) -> None:
        """A group message for a full channel, sent before its full mark reached Redis."""
        book = self._book
        book.channel(local.name).dropped += 1
        book.group(group).dropped += 1
        book.totals.dropped += 1
        self._drops.dropped(group, local.name, local.capacity)
        # Marked again even if marked already: the mark may have been lost with a
        # restarted Redis (senders that do not see it are what makes a drop happen here).
        self._mark(local)

    # -- named channels ----------------------------------------------------------------------

    def _pull(self, local: LocalChannel) -> None:
        if local.name not in self._pullers:
            self._pullers[local.name] = detached_task(
                self._puller(local), name=f"kanal-redis-pull-{local.name}"
            )

    async def _puller(self, local: LocalChannel) -> None:
        """Pop one message per waiting receiver from a named channel's list."""
        try:
            shards = self._live_shards()
            shard = shards.for_name(local.name)
            key = shard.key("ch", local.name)
            retry = Backoff(_RETRY_FIRST, _RETRY_CEILING)
            while not self._closing:
                # One message per waiting receiver, all of them in one round trip: a pool of
                # workers waiting on a queue takes a burst at once, not one message per trip.
                waiting = sum(1 for waiter in local.waiters if not waiter.done())
                if not waiting:
                    break
                try:
                    # A plain client has no socket timeout (see HostSpec.make_client).
                    async with asyncio.timeout(_PULL_BLOCK + shards.timeout):
                        reply = await shard.blocking.execute_command(
                            "BLMPOP", _PULL_BLOCK, 1, key, "LEFT", "COUNT", min(waiting, _BATCH)
                        )
                except unavailable_errors as exc:
                    logger.warning(
                        "receiving from %r: Redis at %s: %s", local.name, shard.name, exc
                    )
                    await asyncio.sleep(retry.next())
                    continue
                except Exception:  # see _drain_loop: waiting receivers must not be stranded
                    logger.exception("receiving from %r failed unexpectedly; retrying", local.name)
                    await asyncio.sleep(retry.next())
                    continue
                retry.reset()
                if not reply:
                    continue
                now = now_ms()
                unclaimed: list[bytes] = []
                for record in reply[1]:
                    head, _, payload = record.partition(b"\n")
                    deadline = int(head.split(b" ", 1)[0])
                    if deadline <= now:
                        stats = self._book
                        stats.channel(local.name).expired += 1
                        stats.totals.expired += 1
                    elif unclaimed or not self._hand(local, (deadline, payload, False)):
                        unclaimed.append(record)  # its receiver left meanwhile
                if unclaimed:
                    # Back to the head of the list, in their order, for other receivers.
                    shard.batcher.call("LPUSH", key, *reversed(unclaimed)).add_done_callback(
                        functools.partial(self._given_back, local.name, len(unclaimed))
                    )
        finally:
            if self._pullers.get(local.name) is asyncio.current_task():
                del self._pullers[local.name]
            self._forget_if_idle(local)

    def _given_back(self, channel: str, count: int, future: asyncio.Future[Any]) -> None:
        """Popped messages nobody took could not go back (Redis gone): count them as lost."""
        if not future.cancelled() and future.exception() is None:
            return
        book = self._book
        book.channel(channel).dropped += count
        book.totals.dropped += count
        logger.warning(
            "%d message(s) of %r popped for receivers that left could not be put back "
            "(Redis unavailable) and are lost",
            count,
            channel,
        )

    # -- expiry and capacity ---------------------------------------------------------------

    def _trim(self, local: LocalChannel, now: int) -> None:
        messages = local.messages
        book = self._book
        while messages and messages[0][0] <= now:
            item = messages.popleft()
            book.channel(local.name).expired += 1
            book.totals.expired += 1
            if item[2] and local.process is not None:
                self._ack(local.process, local.name)
        if not messages:
            self._buffered.discard(local.name)
        if local.full:
            self._unmark(local)

    def _schedule_sweep(self, deadline: int) -> None:
        if deadline >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        delay = max(0.0, (deadline - now_ms()) / 1000) + 0.005
        self._timer = asyncio.get_running_loop().call_later(delay, self._sweep)

    def _sweep(self) -> None:
        """Drop expired buffered messages, releasing their capacity in Redis."""
        self._timer = None
        self._timer_at = float("inf")
        now = now_ms()
        earliest = None
        for name in list(self._buffered):
            local = self.channels.get(name)
            if local is None:
                self._buffered.discard(name)
                continue
            self._trim(local, now)
            if local.messages:
                head = local.messages[0][0]
                earliest = head if earliest is None else min(earliest, head)
            else:
                self._forget_if_idle(local)
        if earliest is not None:
            self._schedule_sweep(earliest)

    def _ack(self, process: str, channel: str) -> None:
        counts = self._acks.get(process)
        if counts is None:
            counts = self._acks[process] = {}
        counts[channel] = counts.get(channel, 0) + 1
        if not self._ack_scheduled:
            self._ack_scheduled = True
            asyncio.get_running_loop().call_later(_ACK_DELAY, self._flush_acks)

    def _flush_acks(self) -> None:
        self._ack_scheduled = False
        acks, self._acks = self._acks, {}
        if not acks:
            return
        shards = self._shards
        if shards is None:
            return
        for process, counts in acks.items():
            shard = shards.for_name(process)
            flat: list[Any] = []
            for channel, count in counts.items():
                flat += (channel, count)
            shard.batcher.call(
                "EVALSHA", ACK.sha, 1, shard.key("n", process), *flat
            ).add_done_callback(quiet)

    # -- lifecycle -------------------------------------------------------------------------

    def buffered(self) -> dict[str, int]:
        """Messages buffered in this process, per channel."""
        return {
            name: len(self.channels[name].messages)
            for name in self._buffered
            if name in self.channels
        }

    def clear(self) -> None:
        """Drop buffered messages and pending acks (flush); waiting receivers stay."""
        for name in list(self.channels):
            local = self.channels[name]
            local.messages.clear()
            local.full = False  # flush deleted the marks in Redis
            self._forget_if_idle(local)
        self._buffered.clear()
        self._acks.clear()
        self._markers.clear()  # flush deleted them: that is no data loss

    async def close(self) -> None:
        """Stop every task and wake every waiting receiver with LayerClosed."""
        await self._stop("the layer was closed while this receive waited")
        self._reset()

    async def release(self) -> None:
        """The loop is ending but the layer is not closed: stop every task, and keep what
        is buffered for the next :meth:`bind` (in this process)."""
        await self._stop("the event loop the channel layer runs on stopped")
        self._kept_pid = os.getpid()

    async def _stop(self, reason: str) -> None:
        self._shards = None
        self._closing = True
        tasks = [*self._drains.values(), *self._pullers.values()]
        while tasks:
            # Cancel again if a task is still running: on Python 3.11 a cancellation that
            # coincides with a library's read timeout can turn into a TimeoutError, which
            # the loops treat as an outage; the _closing flag ends them then.
            for task in tasks:
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=0.5)
            tasks = list(pending)
        if self._timer is not None:
            self._timer.cancel()
        error = LayerClosed(reason)
        for local in self.channels.values():
            while local.waiters:
                waiter = local.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(error)
