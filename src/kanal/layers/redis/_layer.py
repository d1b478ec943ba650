"""The Redis channel layer: one inbox per process, batched round trips, fan-out in Lua."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit, urlunsplit

from kanal._tasks import detached_task
from kanal.exceptions import (
    ChannelFull,
    ConfigError,
    InvalidMessage,
    LayerClosed,
    LayerUnavailable,
)
from kanal.layers._background import is_background_loop
from kanal.layers._base import (
    DEFAULT_CAPACITY,
    DEFAULT_EXPIRY,
    DEFAULT_GROUP_EXPIRY,
    DEFAULT_PRESENCE_PERIOD,
    DEFAULT_PRESENCE_TTL,
    BaseChannelLayer,
    CapacityPatterns,
    Message,
)
from kanal.layers._binding import LoopBoundLayer
from kanal.layers._codec import DEFAULT_MAX_MESSAGE_SIZE, Decoded, MessageCodec
from kanal.layers._history import History, HistoryPatterns, Position
from kanal.layers._names import require_valid_channel_name, require_valid_group_name
from kanal.layers._options import (
    boolean,
    comma_list,
    history_list,
    positive_float,
    require_positive_int,
    require_positive_number,
)
from kanal.layers._stats import LayerStats
from kanal.layers.redis._connection import Batcher, HostSpec, parse_hosts, quiet
from kanal.layers.redis._crypto import EncryptedCodec
from kanal.layers.redis._history import (
    history_arguments,
    history_command,
    history_from_reply,
    history_keys,
)
from kanal.layers.redis._receiving import Payload, Receiver
from kanal.layers.redis._scripts import (
    GROUP_ADD,
    GROUP_DISCARD,
    GROUP_SEND,
    GROUP_SEND_HISTORY,
    PRESENCE_READ,
    PRESENCE_WRITE,
    SEND,
    SEND_NAMED,
    now_ms,
)
from kanal.layers.redis._sharding import process_of
from kanal.layers.redis._topology import Shard, Shards

__all__ = ["RedisChannelLayer"]

logger = logging.getLogger("kanal.layers.redis")

# The longest any operation waits for Redis before it raises LayerUnavailable: far above a
# healthy round trip (well under a millisecond on a LAN), short enough that a request
# handler waiting on a dead server fails while its client still waits (channels_redis has
# no such bound).
DEFAULT_TIMEOUT = 5.0
# The longest an outage may last before what waits for Redis fails: a restart of Redis on
# its machine takes well under a second, a Sentinel failover a few seconds (its
# down-after-milliseconds, 5 s in the sample sentinel.conf, plus the election). Meanwhile
# sends wait, in order, instead of failing; a connection's handler waits as long at most.
DEFAULT_OUTAGE_TIMEOUT = 5.0


def _nothing() -> None:
    """Nothing to do (a recovery with nothing to confirm)."""


def _home_of(channel: str) -> str:
    """What picks a channel's shard: its process (even an empty one), else its name."""
    process = process_of(channel)
    return channel if process is None else process


class RedisChannelLayer(LoopBoundLayer):
    """A channel layer on Redis or Valkey, for applications spread over many machines.

    A drop-in ``BACKEND`` for Django Channels projects: the constructor takes
    channels_redis's ``CONFIG`` keys with the same meaning (``hosts``, ``prefix``,
    ``expiry``, ``group_expiry``, ``capacity``, ``channel_capacity``,
    ``symmetric_encryption_keys``), plus ``max_message_size``, ``timeout`` (the longest
    any operation waits for Redis before raising
    :class:`~kanal.exceptions.LayerUnavailable`), ``outage_timeout`` (how long operations
    wait, in order, for an unreachable Redis to come back before they fail; 0 fails them
    at once), ``cluster`` (the hosts are entry points of a Redis Cluster) and ``history``
    (groups that keep their last messages, in a Redis stream each: docs/history.md).

    How it is fast:

    * Each process has one inbox list; one task drains it with ``BLMPOP`` in batches of up
      to 1,000 and hands messages to local per-channel buffers. Receiving a message from a
      process-specific channel costs no round trip of its own.
    * Every command goes through an auto-pipeline: all sends, group operations and
      acknowledgements issued in one event-loop iteration leave in one round trip.
    * Lua scripts are loaded once and called by SHA. ``group_send`` is one script per
      shard that fans out inside Redis, pushing ONE record per receiving process however
      many of its channels are members; the member list never travels to Python.
    * Capacity is counted per channel (a hash per process), so one full consumer does not
      cost the other channels of its process their messages. Every drop is counted and
      logged.

    Several ``hosts`` are shards: a process's inbox, a named channel or a group's members
    of one process live on the shard consistent hashing gives their name.

    Presence (``docs/presence.md``): a group's entries live on the shard of its name, in a
    sorted set of deadlines and a hash of entries that expire with the latest deadline;
    each change or heartbeat is one script, one round trip.
    """

    extensions: ClassVar[list[str]] = ["groups", "flush", "presence"]

    url_options: ClassVar[dict[str, Callable[[str], Any]]] = {
        **BaseChannelLayer.url_options,
        "prefix": str,
        "timeout": positive_float,
        "outage_timeout": float,
        "cluster": boolean,
        "symmetric_encryption_keys": comma_list,
        "history": history_list,
    }
    supports_history: ClassVar[bool] = True

    def __init__(
        self,
        hosts: Any = None,
        prefix: str = "asgi",
        expiry: float = DEFAULT_EXPIRY,
        group_expiry: float = DEFAULT_GROUP_EXPIRY,
        capacity: int = DEFAULT_CAPACITY,
        channel_capacity: CapacityPatterns | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT,
        cluster: bool = False,
        codec: MessageCodec | None = None,
        history: HistoryPatterns | None = None,
        presence_ttl: float = DEFAULT_PRESENCE_TTL,
        presence_period: float = DEFAULT_PRESENCE_PERIOD,
    ) -> None:
        if codec is None and symmetric_encryption_keys is not None:
            codec = EncryptedCodec(
                symmetric_encryption_keys,
                require_positive_int("max_message_size", max_message_size),
            )
        super().__init__(
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            max_message_size=max_message_size,
            codec=codec,
            history=history,
            presence_ttl=presence_ttl,
            presence_period=presence_period,
        )
        if not isinstance(prefix, str) or not re.fullmatch(r"[\w.\-]*", prefix, re.ASCII):
            raise ConfigError(f"prefix must be letters, digits, '.', '-' or '_', not {prefix!r}")
        self.timeout = require_positive_number("timeout", timeout)
        if (
            isinstance(outage_timeout, bool)
            or not isinstance(outage_timeout, (int, float))
            or not 0 <= outage_timeout < float("inf")
        ):
            raise ConfigError(
                f"outage_timeout must be a number of seconds >= 0, not {outage_timeout!r}"
            )
        self.outage_timeout = float(outage_timeout)
        self.hosts: list[HostSpec] = parse_hosts(hosts)
        self.prefix = prefix
        self.cluster = bool(cluster)
        self._expiry_ms = max(1, int(self.expiry * 1000))
        self._group_expiry_ms = max(1, int(self.group_expiry * 1000))
        # This process's name in channel names; no "." or "!" so process_of() finds it.
        self._process = secrets.token_hex(8)
        self._counter = itertools.count(1)
        self._shards: Shards | None = None
        # Closes the connections if the home loop ends without close() (see _bound).
        self._watch: asyncio.Task[None] | None = None
        self._receiver = Receiver(
            book=self._book,
            drops=self._drops,
            codec=self.codec,
            capacity_of=self.get_capacity,
            expiry_ms=self._expiry_ms,
            on_data_loss=self.restore_memberships,
        )
        #: Operations that raised LayerUnavailable (Redis unreachable or too slow).
        self.unavailable_errors = 0
        # (group, channel) -> membership deadline (ms) of every group_add made here, so
        # that memberships lost with a restarted Redis are restored when it is back.
        self._memberships: dict[tuple[str, str], int] = {}
        # group_discards that failed with Redis unreachable: sent again when it answers.
        self._failed_discards: set[tuple[str, str]] = set()

    # -- construction from URLs -------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str | Sequence[str], **overrides: Any) -> Self:
        """A layer for ``redis://host:port/db?prefix=...&capacity=...`` or a list of them.

        Several URLs (or ``redis://h1:6379,h2:6380/0``) shard over those servers; the
        options come from the first URL's query string. ``rediss://`` uses TLS and
        ``redis+sentinel://sentinel1:26379,sentinel2:26379/master_name/db`` asks Sentinels
        for the master.
        """
        if isinstance(url, str):
            return super().from_url(url, **overrides)
        urls = list(url)
        if not urls:
            raise ConfigError("from_url needs at least one Redis URL")
        hosts = [urlunsplit(urlsplit(each)._replace(query="")) for each in urls]
        return super().from_url(urls[0], **{"hosts": hosts, **overrides})

    @classmethod
    def url_arguments(cls, scheme: str, netloc: str, path: str) -> dict[str, Any]:
        """``hosts`` from the URL's location (its query string holds the options)."""
        return {"hosts": [urlunsplit((scheme, netloc, path, "", ""))]}

    # -- the event loop the connections live on (see kanal.layers._binding) ----------------

    def _bound(self, loop: asyncio.AbstractEventLoop) -> None:
        """New connections (and receive state) on ``loop``, the layer's new home."""
        shards = Shards(
            self.hosts,
            self.prefix,
            self.timeout,
            self.cluster,
            outage_timeout=self.outage_timeout,
            recovery=self._recovery_for,
            round_trips=self._book.round_trips,
        )
        self._receiver.bind(loop, shards)
        self._shards = shards
        # The watch belongs to one home: a previous home's (done, its loop closed) must not
        # survive into this one, where close() would wait on it through a closed loop.
        self._watch = None
        if not is_background_loop(loop):  # that one closes its layers itself, at exit
            self._watch = detached_task(
                self._close_with_loop(shards), name="kanal-redis-loop-end", loop=loop
            )

    async def _close_with_loop(self, shards: Shards) -> None:
        """Wait for the home loop's end; if the layer was not closed by then, close its
        connections rather than leave them open for a loop that is gone.

        ``asyncio.run`` (which asgiref's ``async_to_sync`` runs each call with, in a thread
        with no loop) cancels every task of its loop before closing it; this wakes then.
        The layer stays usable: the next call binds it to a loop that runs (the shared
        background loop after one of asgiref's: see kanal.layers._binding), and receives
        what was drained here but not yet received.
        """
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            if self._shards is shards:
                self._shards = None
                await self._receiver.release()
                await shards.aclose()

    def _shards_here(self) -> Shards | None:
        """The shards if the caller runs on their loop (binding a loop if none is alive);
        ``None`` if the caller must forward to the loop they live on."""
        if asyncio.get_running_loop() is self._loop and self._shards is not None:
            return self._shards
        # Closed, or closing (shards already gone): never forward, least of all to itself.
        self._check_open()
        if not self._claim():
            return None
        shards = self._shards
        if shards is None:
            # Home, but its end already closed the connections: a task that outlived it.
            raise LayerClosed("the event loop the channel layer runs on stopped")
        return shards

    async def _call(self, shard_call: Awaitable[Any]) -> Any:
        try:
            return await shard_call
        except LayerUnavailable:
            self.unavailable_errors += 1
            raise

    def _lost(self, operation: str, target: str, error: LayerUnavailable) -> None:
        """A message ``operation`` could not send (Redis unreachable): counted, logged."""
        if operation == "send":
            self._book.unavailable(target, None)
        else:
            self._book.unavailable(None, target)
        self._drops.unavailable(operation, target, error)

    # -- channels ----------------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new channel of this process: ``<prefix>.<process>!<n>``."""
        shards = self._shards_here()
        if shards is None:
            return await self._forward(lambda: self.new_channel(prefix))
        self._check_open()
        name = require_valid_channel_name(f"{prefix}.{self._process}!{next(self._counter):x}")
        # Start draining now, so that what others send before the first receive arrives.
        self._receiver.watch(self._process)
        return name

    async def send(self, channel: str, message: Message) -> None:
        """Queue ``message`` for ``channel`` (one round trip, shared with concurrent calls)."""
        shards = self._shards_here()
        if shards is None:
            return await self._forward(lambda: self.send(channel, message))
        self._check_open()
        require_valid_channel_name(channel)
        payload = self.codec.encode(message, channel)
        capacity = self.get_capacity(channel)
        now = now_ms()
        header = b"%d %s\n" % (now + self._expiry_ms, channel.encode())
        process = process_of(channel)
        if process == self._process:
            # A channel of this very process: its backlog is here, so capacity is checked
            # here and the message goes straight to the buffer, with no round trip.
            queued = self._receiver.offer(channel, now + self._expiry_ms, payload)
            # Still a suspension point, as every send through Redis is: a loop of sends
            # lets the receivers run.
            await asyncio.sleep(0)
        else:
            try:
                if process is not None:
                    shard = shards.for_name(process)
                    queued = await self._call(
                        shard.batcher.run(
                            "EVALSHA", SEND.sha, 3, shard.key("in", process),
                            shard.key("n", process), shard.key("f", process), channel,
                            capacity, header + payload, self._expiry_ms,
                        )
                    )  # fmt: skip
                else:
                    shard = shards.for_name(channel)
                    queued, expired = await self._call(
                        shard.batcher.run(
                            "EVALSHA", SEND_NAMED.sha, 1, shard.key("ch", channel),
                            capacity, header + payload, self._expiry_ms, now,
                        )
                    )  # fmt: skip
                    if expired:
                        self._book.channel(channel).expired += expired
                        self._book.totals.expired += expired
            except LayerUnavailable as error:
                self._lost("send", channel, error)
                raise
        if not queued:
            raise ChannelFull(
                f"channel {channel!r} is full ({capacity} messages waiting); "
                "the message was not sent",
                channel=channel,
                capacity=capacity,
            )
        self._book.channel(channel).sent += 1
        self._book.totals.sent += 1

    async def receive(self, channel: str) -> Message:
        """Wait for the next message of ``channel``.

        Process-specific channels are served from this process's buffer, filled by the
        inbox drain; named channels pop from their Redis list, one message per waiting
        receiver, so that other processes' receivers get the rest.
        """
        if (asyncio.get_running_loop() is not self._loop or self._shards is None) and (
            self._shards_here() is None
        ):
            return self._message(
                channel,
                await self._take_home(
                    lambda: self._receive_here(channel), lambda data: self._put_back(channel, data)
                ),
            )
        # Receiver.receive, inlined: no coroutine but this one on the path of every message.
        if self._closed:
            self._check_open()
        receiver = self._receiver
        local = receiver.channels.get(channel) if type(channel) is str else None
        if local is None or not local.receivable:
            local = receiver.receivable(channel)
        item = receiver.take_item(local) if local.messages else None
        if item is None:
            waiter = receiver.wait(local)
            try:
                item = await waiter
            except BaseException:
                receiver.abandon(local, waiter)
                raise
            if item[2] or local.process is None:  # else there is nothing to settle
                receiver.settle(local, item)
        book = self._book
        book.channel(channel).received += 1
        book.totals.received += 1
        payload = item[1]
        if type(payload) is Decoded:
            return payload.fresh()
        return self._message(channel, payload)

    def _message(self, channel: str, data: Payload) -> Message:
        """The receiver's own message: decoded, or a fresh copy of one decoded already.

        One that cannot be decoded (a wrong encryption key) is counted as refused, not
        received, and logged; the receiver gets the InvalidMessage."""
        if type(data) is Decoded:
            return data.fresh()
        assert isinstance(data, bytes)
        try:
            return self.codec.decode(data)
        except InvalidMessage as error:
            self._book.refuse(channel, error)
            raise

    async def _receive_here(self, channel: str) -> Payload:
        self._check_open()
        if self._shards is None:  # home, but its end already closed the connections
            raise LayerClosed("the event loop the channel layer runs on stopped")
        data = await self._receiver.receive(channel)
        self._count_received(channel, 1)
        return data

    def _count_received(self, channel: str, n: int) -> None:
        self._book.channel(channel).received += n
        self._book.totals.received += n

    def _put_back(self, channel: str, data: Payload) -> None:
        """Undo a receive whose caller was gone (on the home loop)."""
        if self._closed:
            return
        self._receiver.put_back(channel, now_ms() + self._expiry_ms, data)
        self._count_received(channel, -1)

    def receive_nowait(self, channel: str) -> Message | None:
        """As the base's: a message of a process-specific channel already buffered here."""
        if self._closed or asyncio._get_running_loop() is not self._loop:
            return None
        data = self._receiver.take(channel)
        if data is None:
            return None
        self._count_received(channel, 1)
        return self._message(channel, data)

    # -- groups ------------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group``, or renew its membership for ``group_expiry``."""
        shards = self._shards_here()
        if shards is None:
            return await self._forward(lambda: self.group_add(group, channel))
        self._check_open()
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        deadline = now_ms() + self._group_expiry_ms
        # Kept before it is sent: one that fails with Redis unreachable is sent again
        # when Redis answers (see _recovery_for), and restored if Redis lost it.
        self._memberships[group, channel] = deadline
        self._failed_discards.discard((group, channel))
        await self._call(self._group_add(shards, group, channel, deadline))

    def _group_add(
        self, shards: Shards, group: str, channel: str, deadline: int
    ) -> asyncio.Future[Any]:
        # A group's members of one process live on that process's shard, so the fan-out
        # script finds a member and its inbox on the same server (or cluster slot).
        shard = shards.for_name(_home_of(channel))
        return shard.batcher.call(*self._group_add_command(shard, group, channel, deadline))

    def _group_add_command(
        self, shard: Shard, group: str, channel: str, deadline: int
    ) -> tuple[Any, ...]:
        capacity = self.get_capacity(channel)
        return (
            "EVALSHA", GROUP_ADD.sha, 3, shard.key("g", group), shard.key("gc", group),
                shard.key("gm", group),
            channel, deadline, "" if capacity == self.capacity else capacity,
            self._group_expiry_ms,
        )  # fmt: skip

    def _group_discard_command(self, shard: Shard, group: str, channel: str) -> tuple[Any, ...]:
        return (
            "EVALSHA", GROUP_DISCARD.sha, 3, shard.key("g", group), shard.key("gc", group),
                shard.key("gm", group),
            channel,
        )  # fmt: skip

    def _recovery_for(self, batcher: Batcher) -> tuple[list[tuple[Any, ...]], Callable[[], None]]:
        """What ``batcher`` sends first when Redis answers again after being unreachable.

        Every unexpired membership made here whose member lives on that server is added
        again (with its own deadline: a no-op if Redis kept it, its restoration if Redis
        lost it), before the commands that waited, so that a group_send held during the
        outage finds its members; and the group_discards that failed are sent again.
        """
        shards = self._shards
        if shards is None or self._closed:
            return [], _nothing
        now = now_ms()
        commands: list[tuple[Any, ...]] = []
        for (group, channel), deadline in list(self._memberships.items()):
            if deadline <= now:
                del self._memberships[group, channel]
                continue
            shard = shards.for_name(_home_of(channel))
            if shard.batcher is batcher:
                commands.append(self._group_add_command(shard, group, channel, deadline))
        adds = len(commands)
        discards: list[tuple[str, str]] = []
        for group, channel in self._failed_discards:
            shard = shards.for_name(_home_of(channel))
            if shard.batcher is batcher:
                commands.append(self._group_discard_command(shard, group, channel))
                discards.append((group, channel))

        def sent() -> None:
            self._failed_discards.difference_update(discards)
            if commands:
                logger.info(
                    "Redis at %s answers again: %d group membership(s) of this process "
                    "sent again, %d failed leave(s) done",
                    batcher.name,
                    adds,
                    len(discards),
                )

        return commands, sent

    def restore_memberships(self) -> int:
        """Re-add this instance's unexpired memberships (after Redis lost its data).

        Called by the receive loop when a lost Redis connection comes back; returns how
        many memberships were sent.
        """
        shards = self._shards
        if shards is None or self._closed:
            return 0
        now = now_ms()
        live = {key: deadline for key, deadline in self._memberships.items() if deadline > now}
        self._memberships = live
        for (group, channel), deadline in live.items():
            self._group_add(shards, group, channel, deadline).add_done_callback(quiet)
        if live:
            logger.info("restoring %d group memberships after a Redis outage", len(live))
        return len(live)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; silent if it is not a member."""
        shards = self._shards_here()
        if shards is None:
            return await self._forward(lambda: self.group_discard(group, channel))
        self._check_open()
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        self._memberships.pop((group, channel), None)
        shard = shards.for_name(_home_of(channel))
        try:
            await self._call(shard.batcher.run(*self._group_discard_command(shard, group, channel)))
        except LayerUnavailable:
            # Sent again when Redis answers (see _recovery_for), not left until it expires.
            self._failed_discards.add((group, channel))
            raise

    async def group_send(self, group: str, message: Message) -> None:
        """Deliver ``message`` to every member: one script per shard, all shards at once.

        A full member is skipped, counted in :meth:`stats` and logged. If a shard cannot
        be reached, the other shards still deliver and ``LayerUnavailable`` is raised
        afterwards.
        """
        shards = self._shards_here()
        if shards is None:
            return await self._forward(lambda: self.group_send(group, message))
        self._check_open()
        require_valid_group_name(group)
        payload = self.codec.encode(message, f"group {group}")
        gstats = self._book.group(group)
        gstats.sent += 1
        totals = self._book.totals
        totals.group_sends += 1
        now = now_ms()
        policy = self.history_policy(group) if self.history else None
        targets = shards.all
        results: list[Any] = []
        position = ""
        if policy is not None:
            # The group's home shard first: its script keeps the message in the group's
            # stream and gives it its position, which the other shards' fan-outs carry.
            home = shards.for_name(group)
            command = (
                "EVALSHA", GROUP_SEND_HISTORY.sha, 5, home.key("g", group),
                home.key("gc", group), home.key("gm", group), *history_keys(home, group),
                *self._fanout_arguments(home, group, now, payload, ""),
                *history_arguments(policy),
            )  # fmt: skip
            try:
                result = await home.batcher.run(*command)
            except Exception as exc:
                results, targets = [exc], []  # nothing kept, nothing delivered anywhere
            else:
                results = [result]
                position = result[2].decode()
                targets = [shard for shard in targets if shard is not home]
        commands = [
            (
                shard,
                (
                    "EVALSHA", GROUP_SEND.sha, 3, shard.key("g", group), shard.key("gc", group),
                    shard.key("gm", group),
                    *self._fanout_arguments(shard, group, now, payload, position),
                ),
            )
            for shard in targets
        ]  # fmt: skip
        if len(commands) == 1 and not results:
            # One shard: the Batcher's lone-command path (no task, no gather).
            shard, command = commands[0]
            try:
                results = [await shard.batcher.run(*command)]
            except Exception as exc:
                results = [exc]
        elif commands:
            results += await asyncio.gather(
                *(shard.batcher.call(*command) for shard, command in commands),
                return_exceptions=True,
            )
        failure: BaseException | None = None
        for result in results:
            if isinstance(result, BaseException):
                failure = failure or result
                continue
            delivered, dropped = result[0], result[1]
            gstats.delivered += delivered
            totals.sent += delivered
            for raw in dropped:
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                capacity = self.get_capacity(name)
                self._book.channel(name).dropped += 1
                gstats.dropped += 1
                totals.dropped += 1
                self._drops.dropped(group, name, capacity)
        if failure is not None:
            if isinstance(failure, LayerUnavailable):
                self.unavailable_errors += 1
                self._lost("group_send", group, failure)
            raise failure

    def _fanout_arguments(
        self, shard: Shard, group: str, now: int, payload: bytes, position: str
    ) -> tuple[Any, ...]:
        """The fan-out scripts' arguments (see GROUP_SEND in _scripts.py)."""
        return (
            now, now + self._expiry_ms, payload, self.capacity, self._expiry_ms, shard.prefix,
            group, position,
        )  # fmt: skip

    async def group_history(
        self, group: str, since: Position | str | None = None, *, limit: int | None = None
    ) -> History:
        """As the base's (docs/history.md): one script on the group's home shard."""
        shards = self._shards_here()
        if shards is None:
            return await self._forward(lambda: self.group_history(group, since, limit=limit))
        self._check_open()
        require_valid_group_name(group)
        policy = self._require_history(group)
        start = None if since is None else Position.parse(since)
        limit = self._history_limit(limit)
        shard = shards.for_name(group)
        command = history_command(shard, group, start, policy, limit)
        reply = await self._call(shard.batcher.run(*command))
        return history_from_reply(group, start, reply, self.codec.decode, limit)

    # -- presence (the store behind kanal.layers._presence) ----------------------------------

    async def _presence_write(
        self,
        group: str,
        add: Sequence[tuple[str, bytes]],
        renew: Sequence[str],
        remove: Sequence[str],
        ttl: float,
    ) -> tuple[list[str], list[tuple[str, bytes]]]:
        shards = self._shards_here()
        if shards is None:
            return await self._forward(lambda: self._presence_write(group, add, renew, remove, ttl))
        self._check_open()
        shard = shards.for_name(group)
        now = now_ms()
        ttl_ms = max(1, int(ttl * 1000))
        absent, gone = await self._call(
            shard.batcher.run(
                "EVALSHA", PRESENCE_WRITE.sha, 2, shard.key("pz", group),
                    shard.key("pm", group),
                now, now + ttl_ms, ttl_ms, len(add), len(renew),
                *[item for pair in add for item in pair], *renew, *remove,
            )
        )  # fmt: skip
        return [ref.decode() for ref in absent], [
            (gone[i].decode(), gone[i + 1]) for i in range(0, len(gone), 2)
        ]

    async def _presence_read(self, group: str) -> list[tuple[str, bytes]]:
        shards = self._shards_here()
        if shards is None:
            return await self._forward(lambda: self._presence_read(group))
        self._check_open()
        shard = shards.for_name(group)
        flat = await self._call(
            shard.batcher.run(
                "EVALSHA", PRESENCE_READ.sha, 2, shard.key("pz", group), shard.key("pm", group),
                now_ms(),
            )
        )  # fmt: skip
        return [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]

    # -- lifecycle ---------------------------------------------------------------------------

    async def flush(self) -> None:
        """Delete every key of this layer's prefix on every shard, and local buffers.

        Receivers already waiting keep waiting and get later messages.
        """
        shards = self._shards_here()
        if shards is None:
            return await self._forward(self.flush)
        self._check_open()
        await shards.delete_all(self.prefix)
        if self._presence is not None:
            self._presence.clear()
        self._memberships.clear()
        self._failed_discards.clear()
        self._receiver.clear()
        self._book.clear()

    async def close(self) -> None:
        """Stop the receive loops, wake waiting receivers with LayerClosed, disconnect."""
        if self._closed:
            return
        if self.bound_loop() is not None and asyncio.get_running_loop() is not self._loop:
            return await self._forward(self.close)
        await super().close()
        shards, self._shards = self._shards, None
        self._receiver.detach()
        watch, self._watch = self._watch, None
        if self._loop is not None and asyncio.get_running_loop() is self._loop:
            if watch is not None:
                watch.cancel()  # it finds the shards gone and does nothing
                await asyncio.wait([watch])
            await self._receiver.close()
            if shards is not None:
                await shards.aclose()
        self._unbind()

    async def close_pools(self) -> None:
        """channels_redis's ``close_pools()``: disconnect, and stay usable (reconnect on use).

        Scripts and task queues call it after ``async_to_sync`` work. Waiting receives are
        woken with ``LayerClosed``, as the connections they wait on are gone.
        """
        if self._closed:
            return
        if self.bound_loop() is not None and asyncio.get_running_loop() is not self._loop:
            return await self._forward(self.close_pools)
        shards, self._shards = self._shards, None
        watch, self._watch = self._watch, None
        if self._loop is not None and asyncio.get_running_loop() is self._loop:
            if watch is not None:
                watch.cancel()  # it finds the shards gone and does nothing
                await asyncio.wait([watch])
            await self._receiver.close()
            if shards is not None:
                await shards.aclose()
        self._unbind()  # the next call binds afresh, with new connections

    def local_groups(self) -> dict[str, int]:
        # This process's channels (``<prefix>.<process>!<n>``), as ipc:// counts them: a
        # channel of another process added here is that process's to report.
        own = f".{self._process}!"
        return dict(collections.Counter(g for g, channel in self._memberships if own in channel))

    def stats(self) -> LayerStats:
        """Counters of this instance; ``pending`` counts messages buffered in this process."""
        snapshot = super().stats()
        for name, count in self._receiver.buffered().items():
            entry = snapshot.channels.get(name)
            if entry is not None:
                entry.pending = count
        return snapshot

    def __repr__(self) -> str:
        hosts = ", ".join(spec.name for spec in self.hosts)
        state = " closed" if self._closed else ""
        return f"<RedisChannelLayer hosts=[{hosts}] prefix={self.prefix!r}{state}>"
