"""The receiving side: shards, the per-process inbox drain, local buffers, capacity acks.

One task per process (per inbox) pops records in batches and hands each message to the
buffer of the channel it names; ``receive`` on a process-specific channel only looks at
that buffer. When a message ``send`` queued leaves the buffer (received, or expired) its
place in the channel's count is released in Redis, batched with every other release of the
same loop iteration. Group messages are not counted in Redis: this process enforces the
capacity of its channels on their backlog, marks a channel full in Redis when its backlog
reaches capacity (so that senders elsewhere refuse it) and clears the mark when it drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from kanal.exceptions import LayerClosed, LayerUnavailable
from kanal.layers._codec import Decoded, MessageCodec
from kanal.layers._names import require_valid_channel_name
from kanal.layers.redis._connection import Batcher, Client, HostSpec, Wire, unavailable_errors
from kanal.layers.redis._scripts import ACK
from kanal.layers.redis._sharding import HashRing, process_of

if TYPE_CHECKING:
    from kanal.layers.redis._layer import RedisChannelLayer

__all__ = ["Receiver", "Shard", "Shards"]

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

# What a receive returns: the sealed message, or a group message already decoded for
# several channels of this process (each receive then copies it).
Payload = bytes | Decoded
# (deadline ms, payload, counted): "counted" if ``send`` took a place in the channel's count
# in Redis, to be released when the message leaves the buffer.
Item = tuple[int, Payload, bool]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _quiet(future: asyncio.Future[Any]) -> None:
    """Done-callback for fire-and-forget commands: retrieve the error so none is logged."""
    if not future.cancelled():
        future.exception()


class Shard:
    """One place keys live: a server (or a cluster hash tag) and its clients."""

    __slots__ = ("batcher", "blocking", "name", "prefix")

    def __init__(self, name: str, prefix: str, batcher: Batcher, blocking: Client) -> None:
        self.name = name
        self.prefix = prefix  # the key prefix, hash tag included: "asgi" or "asgi{3}"
        self.batcher = batcher
        self.blocking = blocking  # a separate pool: blocking pops hold their connection

    def key(self, kind: str, name: str) -> str:
        """The Redis key of ``kind`` (in, n, ch, g, gc) for ``name`` on this shard."""
        return f"{self.prefix}:{kind}:{name}"


class Shards:
    """Every shard of a layer on one event loop, and the ring that picks one by name."""

    def __init__(
        self, hosts: list[HostSpec], prefix: str, timeout: float, cluster: bool, tags: int
    ) -> None:
        self.timeout = timeout
        self._clients: list[Client] = []
        self._batchers: list[Batcher] = []
        shards: list[Shard] = []
        if cluster:
            spec = hosts[0]
            client, extra = spec.make_client(timeout=timeout, blocking=False, cluster=True)
            blocking, more = spec.make_client(timeout=timeout, blocking=True, cluster=True)
            batcher = Batcher(client, spec.name, timeout)
            self._clients += [client, blocking, *extra, *more]
            self._batchers.append(batcher)
            for tag in range(tags):
                shards.append(
                    Shard(f"{spec.name}{{{tag}}}", f"{prefix}{{{tag}}}", batcher, blocking)
                )
        else:
            for spec in hosts:
                client, extra = spec.make_client(timeout=timeout, blocking=False, cluster=False)
                blocking, more = spec.make_client(timeout=timeout, blocking=True, cluster=False)
                batcher = Batcher(client, spec.name, timeout)
                self._clients += [client, blocking, *extra, *more]
                self._batchers.append(batcher)
                shards.append(Shard(spec.name, prefix, batcher, blocking))
        self.all = shards
        self._ring = HashRing(shards, [shard.name for shard in shards])

    def for_name(self, name: str) -> Shard:
        """The shard of a process (its inbox, counts, memberships) or of a named channel."""
        return self._ring.get(name)

    async def delete_all(self, prefix: str) -> None:
        """Delete every key of the layer (``prefix:...`` and ``prefix{tag}:...``)."""
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "[:{]*"
        try:
            async with asyncio.timeout(self.timeout * 4):
                for batcher in self._batchers:
                    # Not the processes' alive markers: without its marker, every other
                    # process would take the flush for Redis losing its data, and warn.
                    keys = [
                        key
                        async for key in batcher.client.scan_iter(match=pattern, count=1000)
                        if b":alive:" not in key
                    ]
                    for start in range(0, len(keys), 500):
                        await batcher.client.unlink(*keys[start : start + 500])
        except unavailable_errors as exc:  # TimeoutError included (an OSError)
            reason = str(exc) or type(exc).__name__
            raise LayerUnavailable(f"flush could not reach Redis: {reason}") from exc

    async def aclose(self) -> None:
        """Close every batcher and client (their connections)."""
        for batcher in self._batchers:
            await batcher.aclose()
        for client in self._clients:
            try:
                await client.aclose()
            except Exception as exc:  # a dead server must not stop the others from closing
                logger.debug("closing a Redis client failed: %s", exc)


class _Local:
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
    """The receiving half of a :class:`RedisChannelLayer` on its event loop."""

    def __init__(self, layer: RedisChannelLayer) -> None:
        self._layer = layer
        #: Times a receive loop lost its Redis connection (each is logged).
        self.connection_losses = 0
        #: Times Redis was found to have lost its data (a restart without persistence).
        self.restarts_detected = 0
        self._markers: set[str] = set()
        self.reset()

    def reset(self) -> None:
        """Forget all state (the loop it lived on is gone)."""
        self._locals: dict[str, _Local] = {}
        self._locals_limit = _MIN_LOCALS
        self._buffered: set[str] = set()
        self._drains: dict[str, asyncio.Task[None]] = {}
        self._pullers: dict[str, asyncio.Task[None]] = {}
        self._acks: dict[str, dict[str, int]] = {}
        self._ack_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._markers = set()
        self._closing = False

    @property
    def _shards(self) -> Any:
        shards = self._layer._shards
        if shards is None:
            raise LayerClosed("the layer was closed")
        return shards

    def _local(self, name: str) -> _Local:
        local = self._locals.get(name)
        if local is None:
            if len(self._locals) >= self._locals_limit:
                self._purge_idle()
            local = self._locals[name] = _Local(name, self._layer.get_capacity(name))
        return local

    def _purge_idle(self) -> None:
        """Forget channels with nothing buffered and nobody waiting.

        Done in bulk when the table doubles, not after every receive: a consumer receives
        from the same channel again and again, and re-creating its entry each time costs
        more than the receive itself.
        """
        self._locals = {
            name: local
            for name, local in self._locals.items()
            if local.messages or local.waiters or local.full
        }
        self._locals_limit = max(_MIN_LOCALS, 2 * len(self._locals))

    def _forget_if_idle(self, local: _Local) -> None:
        if not local.messages and not local.waiters and not local.full:
            self._locals.pop(local.name, None)

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

    def receivable(self, channel: str) -> _Local:
        """The entry of ``channel``, its name checked for receiving (once per entry)."""
        local = self._locals.get(channel) if type(channel) is str else None
        if local is None or not local.receivable:
            require_valid_channel_name(channel, receive=True)
            local = self._local(channel)
            local.receivable = True
        return local

    def take_item(self, local: _Local) -> Item | None:
        """Take the next buffered message of ``local`` (its place released), or ``None``."""
        messages = local.messages
        if not messages:
            return None
        if messages[0][0] <= time.time() * 1000:
            self._trim(local, _now_ms())
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

    def wait(self, local: _Local) -> asyncio.Future[Item]:
        """A future the next message of ``local`` will be handed to."""
        # asyncio.Future directly: loop.create_future() is one Python call more per wait.
        waiter: asyncio.Future[Item] = asyncio.Future(loop=self._layer._loop)
        local.waiters.append(waiter)
        process = local.process
        if process is None:
            self._pull(local)
        else:
            drain = self._drains.get(process)
            if drain is None or drain.done():
                self.watch(process)
        return waiter

    def settle(self, local: _Local, item: Item) -> Payload:
        """What a waiter was handed, its place released."""
        if local.process is not None:
            if item[2]:
                self._ack(local.process, local.name)
        else:
            self._forget_if_idle(local)  # named channels are often one-off (replies)
        return item[1]

    def abandon(self, local: _Local, waiter: asyncio.Future[Item]) -> None:
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
        local = self._locals.get(channel)
        if local is None or local.process is None:
            return None
        item = self.take_item(local)
        return None if item is None else item[1]

    def _hand(self, local: _Local, item: Item) -> bool:
        waiters = local.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return True
        return False

    def _buffer(self, local: _Local, item: Item, front: bool = False) -> None:
        if front:
            local.messages.appendleft(item)
        else:
            local.messages.append(item)
        self._buffered.add(local.name)
        self._schedule_sweep(item[0])
        if not local.full and len(local.messages) >= local.capacity and local.process is not None:
            self._mark(local)

    def _mark(self, local: _Local) -> None:
        """Tell senders elsewhere that ``local``'s backlog is at capacity."""
        local.full = True
        self._set_mark(local, "SADD")

    def _unmark(self, local: _Local) -> None:
        """Clear the full mark once the backlog is below capacity again."""
        if len(local.messages) < local.capacity:
            local.full = False
            self._set_mark(local, "SREM")

    def _set_mark(self, local: _Local, command: str) -> None:
        shards = self._layer._shards
        if shards is None or local.process is None:
            return
        shard = shards.for_name(local.process)
        key = shard.key("f", local.process)
        shard.batcher.call(command, key, local.name).add_done_callback(_quiet)
        if command == "SADD":
            # Only garbage collection of a dead process's marks: a live one clears its
            # marks itself, and its backlog cannot outlive the message expiry.
            ttl = max(2 * self._layer._expiry_ms, 10_000)
            shard.batcher.call("PEXPIRE", key, ttl).add_done_callback(_quiet)

    def put_back(self, channel: str, deadline: int, data: Payload) -> None:
        """A message a receive took for a caller that was gone: first in line again."""
        self._give_back(self._local(channel), (deadline, data, False))

    def _give_back(self, local: _Local, item: Item) -> None:
        if self._hand(local, item):
            return
        if local.process is not None:
            self._buffer(local, item, front=True)
            return
        # A named channel is shared with other processes: put it back at the head of the
        # list rather than keep it here where only this process would ever see it.
        shards = self._layer._shards
        if shards is None:
            return
        shard = shards.for_name(local.name)
        payload = item[1]
        if isinstance(payload, Decoded):  # not made for named channels; kept general
            payload = self._layer.codec.encode(payload.fresh(), local.name)
        record = b"%d %s\n" % (item[0], local.name.encode()) + payload
        shard.batcher.call("LPUSH", shard.key("ch", local.name), record).add_done_callback(_quiet)

    # -- the inbox drain -------------------------------------------------------------------

    def watch(self, process: str) -> None:
        """Make sure a task drains ``process``'s inbox into the local buffers."""
        task = self._drains.get(process)
        if task is None or task.done():
            self._drains[process] = asyncio.get_running_loop().create_task(
                self._drain(process), name=f"kanal-redis-drain-{process}"
            )

    async def _drain(self, process: str) -> None:
        shard: Shard = self._shards.for_name(process)
        key = shard.key("in", process)
        marker = shard.key("alive", process)
        wire = Wire(shard.blocking) if isinstance(shard.blocking, Redis) else None
        try:
            await self._drain_loop(shard, key, marker, wire)
        finally:
            if wire is not None:
                await wire.drop()

    async def _drain_loop(self, shard: Shard, key: str, marker: str, wire: Wire | None) -> None:
        failing = False
        delay = 0.05
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
                    async with asyncio.timeout(_BLOCK + self._shards.timeout):
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
                # Reconnect backoff: quick first retries, then at most one per second.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
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
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.05
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
                restored = self._layer.restore_memberships()
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
        local = self._locals.get(channel) or self._local(channel)
        item = (deadline, payload, False)
        if self._hand(local, item):
            return True
        if local.messages:
            self._trim(local, _now_ms())
        if len(local.messages) >= local.capacity:
            return False
        self._buffer(local, item)
        return True

    def _dispatch(self, records: list[bytes]) -> None:
        now = _now_ms()
        book = self._layer._book
        for record in records:
            try:
                head, _, sealed = record.partition(b"\n")
                fields = head.split(b" ")
                deadline, slash, group = fields[0].partition(b"/")
                # A group message is not counted in Redis: this process enforces capacity.
                counted = not slash
                expired = int(deadline) <= now
                payload: Payload = sealed
                if len(fields) > 2 and not expired:
                    # Several channels of this process have it: decode (and decrypt) once.
                    payload = self._decoded(sealed)
                item = (int(deadline), payload, counted)
                known = self._locals
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
        codec = self._layer.codec
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

    def _drop(self, local: _Local, group: str) -> None:
        """A group message for a full channel, sent before its full mark reached Redis."""
        book = self._layer._book
        book.channel(local.name).dropped += 1
        book.group(group).dropped += 1
        book.totals.dropped += 1
        self._layer._drops.dropped(group, local.name, local.capacity)
        # Marked again even if marked already: the mark may have been lost with a
        # restarted Redis (senders that do not see it are what makes a drop happen here).
        self._mark(local)

    # -- named channels ----------------------------------------------------------------------

    def _pull(self, local: _Local) -> None:
        if local.name not in self._pullers:
            self._pullers[local.name] = asyncio.get_running_loop().create_task(
                self._puller(local), name=f"kanal-redis-pull-{local.name}"
            )

    async def _puller(self, local: _Local) -> None:
        """Pop one message per waiting receiver from a named channel's list."""
        try:
            shard: Shard = self._shards.for_name(local.name)
            key = shard.key("ch", local.name)
            delay = 0.05
            while not self._closing:
                # One message per waiting receiver, all of them in one round trip: a pool of
                # workers waiting on a queue takes a burst at once, not one message per trip.
                waiting = sum(1 for waiter in local.waiters if not waiter.done())
                if not waiting:
                    break
                try:
                    # A plain client has no socket timeout (see HostSpec.make_client).
                    async with asyncio.timeout(_PULL_BLOCK + self._shards.timeout):
                        reply = await shard.blocking.execute_command(
                            "BLMPOP", _PULL_BLOCK, 1, key, "LEFT", "COUNT", min(waiting, _BATCH)
                        )
                except unavailable_errors as exc:
                    logger.warning(
                        "receiving from %r: Redis at %s: %s", local.name, shard.name, exc
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                except Exception:  # see _drain_loop: waiting receivers must not be stranded
                    logger.exception("receiving from %r failed unexpectedly; retrying", local.name)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                delay = 0.05
                if not reply:
                    continue
                now = _now_ms()
                unclaimed: list[bytes] = []
                for record in reply[1]:
                    head, _, payload = record.partition(b"\n")
                    deadline = int(head.split(b" ", 1)[0])
                    if deadline <= now:
                        stats = self._layer._book
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
        book = self._layer._book
        book.channel(channel).dropped += count
        book.totals.dropped += count
        logger.warning(
            "%d message(s) of %r popped for receivers that left could not be put back "
            "(Redis unavailable) and are lost",
            count,
            channel,
        )

    # -- expiry and capacity ---------------------------------------------------------------

    def _trim(self, local: _Local, now: int) -> None:
        messages = local.messages
        book = self._layer._book
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
        delay = max(0.0, (deadline - _now_ms()) / 1000) + 0.005
        self._timer = asyncio.get_running_loop().call_later(delay, self._sweep)

    def _sweep(self) -> None:
        """Drop expired buffered messages, releasing their capacity in Redis."""
        self._timer = None
        self._timer_at = float("inf")
        now = _now_ms()
        earliest = None
        for name in list(self._buffered):
            local = self._locals.get(name)
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
        shards = self._layer._shards
        if shards is None:
            return
        for process, counts in acks.items():
            shard = shards.for_name(process)
            flat: list[Any] = []
            for channel, count in counts.items():
                flat += (channel, count)
            shard.batcher.call(
                "EVALSHA", ACK.sha, 1, shard.key("n", process), *flat
            ).add_done_callback(_quiet)

    # -- lifecycle -------------------------------------------------------------------------

    def buffered(self) -> dict[str, int]:
        """Messages buffered in this process, per channel."""
        return {
            name: len(self._locals[name].messages)
            for name in self._buffered
            if name in self._locals
        }

    def clear(self) -> None:
        """Drop buffered messages and pending acks (flush); waiting receivers stay."""
        for name in list(self._locals):
            local = self._locals[name]
            local.messages.clear()
            local.full = False  # flush deleted the marks in Redis
            self._forget_if_idle(local)
        self._buffered.clear()
        self._acks.clear()
        self._markers.clear()  # flush deleted them: that is no data loss

    async def close(self) -> None:
        """Stop every task and wake every waiting receiver with LayerClosed."""
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
        error = LayerClosed("the layer was closed while this receive waited")
        for local in self._locals.values():
            while local.waiters:
                waiter = local.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(error)
        self.reset()
