"""The channel-layer contract that every backend subclasses."""

from __future__ import annotations

import abc
import asyncio
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar
from urllib.parse import parse_qsl, urlsplit

from kanal.exceptions import ConfigError, LayerClosed, NoHistory, PresenceNotSupported
from kanal.layers._codec import DEFAULT_MAX_MESSAGE_SIZE, MessageCodec
from kanal.layers._history import (
    History,
    HistoryPatterns,
    HistoryPolicy,
    Position,
    compile_history,
)
from kanal.layers._names import (
    MAX_NAME_LENGTH,
    non_local_name,
    require_valid_channel_name,
    require_valid_group_name,
)
from kanal.layers._options import (
    capacity_list,
    positive_float,
    positive_int,
    require_positive_int,
    require_positive_number,
)
from kanal.layers._stats import DropLog, LayerStats, StatsBook

if TYPE_CHECKING:
    from kanal.layers._presence import Notify, Presences, PresenceTracker
    from kanal.layers._sync import SyncChannelLayer

__all__ = ["BaseChannelLayer", "CapacityPatterns", "Message"]

T = TypeVar("T")

Message = dict[str, Any]
_Pattern = str | re.Pattern[str]
CapacityPatterns = Mapping[_Pattern, int] | Iterable[tuple[_Pattern, int]]

# Defaults, the same as Django Channels' so that a project switching backends sees no change.
# 100 messages: a consumer that falls this far behind is stuck, and holding more only hides it.
DEFAULT_CAPACITY = 100
# 60 s: a message nobody received in a minute is stale for interactive use.
DEFAULT_EXPIRY = 60.0
# One day: membership outlives any normal connection; a crashed process's members vanish
# within a day even if nobody discards them.
DEFAULT_GROUP_EXPIRY = 86_400.0
# Presence (kanal.layers._presence). 30 s, Phoenix's down detection: a dead process's
# presences are gone within about that (plus a heartbeat interval for their leaves to be
# noticed), while one that stalls for a few seconds (a GC pause, a slow disk) keeps its own.
DEFAULT_PRESENCE_TTL = 30.0
# 100 ms: joins and leaves of one process reach the group once per period, so a room of n
# filling up costs O(n) frames per period instead of O(n^2); short enough to read as "at
# once" to a person (Phoenix gathers for 1.5 s, across nodes).
DEFAULT_PRESENCE_PERIOD = 0.1


class BaseChannelLayer(abc.ABC):
    """A channel layer: named FIFO mailboxes (channels) and named sets of them (groups).

    The API is Django Channels', so code written for Channels runs unchanged, and the
    constructor takes the keys of a Channels ``CHANNEL_LAYERS[...]["CONFIG"]``.

    Semantics every backend keeps (the conformance suite in :mod:`kanal.testing` checks
    them):

    * ``send`` never waits for a receiver. It raises :class:`~kanal.exceptions.ChannelFull`
      when the channel holds ``capacity`` messages; nothing is sent then.
    * Each message is received at most once, in the order it was sent to its channel.
    * A message not received within ``expiry`` seconds is discarded.
    * ``group_send`` delivers to every member; a full member is skipped, and the drop is
      counted (:meth:`stats`) and logged, never silent.
    * Group membership lasts ``group_expiry`` seconds unless renewed by ``group_add``.
    * A group matching a ``history`` pattern (on a backend with ``supports_history``)
      keeps its last messages with their positions: :meth:`group_history`.

    Backends that list ``"presence"`` in :attr:`extensions` also keep presence
    (:meth:`presence_join`, :meth:`presence`; ``docs/presence.md``): ``presence_ttl`` is
    how long a process's presences outlive its last heartbeat, ``presence_period`` how long
    joins and leaves are gathered into one diff.
    """

    extensions: ClassVar[list[str]] = ["groups", "flush"]
    MAX_NAME_LENGTH: ClassVar[int] = MAX_NAME_LENGTH
    #: False for a backend that keeps everything inside one process (``memory://``): the
    #: commands that run several processes refuse it (``kanal serve --workers 4``).
    shared_across_processes: ClassVar[bool] = True
    #: The backend keeps group history (the ``history`` option, :meth:`group_history`).
    supports_history: ClassVar[bool] = False

    #: Query-string options ``from_url`` understands, with their parsers. Backends extend it.
    url_options: ClassVar[dict[str, Callable[[str], Any]]] = {
        "capacity": positive_int,
        "expiry": positive_float,
        "group_expiry": positive_float,
        "max_message_size": positive_int,
        "channel_capacity": capacity_list,
        "presence_ttl": positive_float,
        "presence_period": positive_float,
    }

    def __init__(
        self,
        *,
        expiry: float = DEFAULT_EXPIRY,
        group_expiry: float = DEFAULT_GROUP_EXPIRY,
        capacity: int = DEFAULT_CAPACITY,
        channel_capacity: CapacityPatterns | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        codec: MessageCodec | None = None,
        history: HistoryPatterns | None = None,
        presence_ttl: float = DEFAULT_PRESENCE_TTL,
        presence_period: float = DEFAULT_PRESENCE_PERIOD,
    ) -> None:
        if history and not self.supports_history:
            raise ConfigError(
                f"{type(self).__name__} keeps no group history: the history option "
                "needs a backend that does (memory://, redis://)"
            )
        #: ``(matcher, policy)`` of the groups that keep history, first match wins.
        self.history = compile_history(history)
        self._history_cache: dict[str, HistoryPolicy | None] = {}
        self.expiry = require_positive_number("expiry", expiry)
        self.presence_ttl = require_positive_number("presence_ttl", presence_ttl)
        self.presence_period = require_positive_number("presence_period", presence_period)
        self._presence: PresenceTracker | None = None
        self.group_expiry = require_positive_number("group_expiry", group_expiry)
        self.capacity = require_positive_int("capacity", capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self._capacity_cache: dict[str, int] = {}
        if codec is None:
            codec = MessageCodec(require_positive_int("max_message_size", max_message_size))
        self.codec = codec
        self._book = StatsBook()
        self._drops = DropLog()
        self._closed = False
        self._sync: SyncChannelLayer | None = None

    # -- construction from a URL ---------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> Self:
        """Build a layer from ``url``; its query string sets options (``?capacity=200``).

        Keyword arguments override the URL's options. Backends that need the rest of the
        URL (host, port, path) override :meth:`url_arguments`.
        """
        parts = urlsplit(url)
        options: dict[str, Any] = cls.url_arguments(parts.scheme, parts.netloc, parts.path)
        for key, raw in parse_qsl(parts.query, keep_blank_values=True):
            parser = cls.url_options.get(key)
            if parser is None:
                known = ", ".join(sorted(cls.url_options))
                raise ConfigError(
                    f"unknown option {key!r} in layer URL {url!r} for {cls.__name__}; "
                    f"known options: {known}"
                )
            try:
                options[key] = parser(raw)
            except ValueError as exc:
                raise ConfigError(f"option {key}={raw!r} in layer URL {url!r}: {exc}") from None
        options.update(overrides)
        return cls(**options)

    @classmethod
    def url_arguments(cls, scheme: str, netloc: str, path: str) -> dict[str, Any]:
        """Constructor arguments taken from the URL's location (none for the base)."""
        return {}

    # -- the contract ---------------------------------------------------------------------

    @abc.abstractmethod
    async def send(self, channel: str, message: Message) -> None:
        """Put ``message`` into ``channel``; raise ``ChannelFull`` if it is at capacity."""

    @abc.abstractmethod
    async def receive(self, channel: str) -> Message:
        """Wait for and return the next message of ``channel``.

        Cancelling a pending ``receive`` loses no message: a message already taken for it
        goes back to the front of the channel.
        """

    def receive_nowait(self, channel: str) -> Message | None:
        """The next message of ``channel`` if this process holds one already, else ``None``.

        Never waits and never goes over the network: a consumer that is behind uses it to
        take the rest of its backlog in one go after a ``receive``, instead of one wake-up
        per message. Only for a channel the caller receives on its own (a process-specific
        one). The base answers ``None`` always, which is correct for any layer.
        """
        return None

    async def discard_channel(self, channel: str) -> None:
        """Say that nobody will receive from ``channel`` again (its connection closed).

        A backend that holds the channel's messages in this process frees them at once,
        and what is sent to it afterwards, for as long as a message could have waited
        (``expiry``), is freed too; both are counted as ``discarded`` in :meth:`stats`.
        Memberships are not touched: leave the groups first. Consumers call it when their
        connection ends. The base does nothing, which is correct for any layer: the
        messages expire on their own.
        """
        return None

    @abc.abstractmethod
    async def new_channel(self, prefix: str = "specific") -> str:
        """Return a new, unique, process-specific channel name that this layer can receive."""

    @abc.abstractmethod
    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (idempotent); renews the membership's expiry."""

    @abc.abstractmethod
    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; silent if it was not a member."""

    @abc.abstractmethod
    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every member of ``group``; full members are counted as drops."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Delete every message and group of this layer (for tests and resets)."""

    async def close(self) -> None:
        """Release the layer's resources; later operations raise ``LayerClosed``.

        This process's presences are not left: they lapse within ``presence_ttl`` and
        another process reports their leaves (consumers leave theirs on disconnect).
        """
        self._closed = True
        self._drops.close()
        if self._presence is not None:
            self._presence.stop()

    # -- presence (docs/presence.md) --------------------------------------------------------

    @property
    def presence_tracker(self) -> PresenceTracker:
        """This instance's presences, their heartbeat and diffs (made on first use)."""
        if self._presence is None:
            from kanal.layers._presence import PresenceTracker

            self._presence = PresenceTracker(self, self.presence_ttl, self.presence_period)
        return self._presence

    async def presence_join(
        self,
        group: str,
        ref: str,
        key: str,
        meta: Mapping[str, Any] | None = None,
        *,
        notify: Notify = "message",
    ) -> None:
        """Make connection ``ref`` present in ``group`` as ``key`` with ``meta``.

        ``ref`` names the connection (its consumer's channel name, say), ``key`` whom it
        stands for (a user id: one key may have several connections), ``meta`` a dict of
        the application's (msgpack types; JSON ones for ``notify="direct"``). Joining again
        with the same ``ref`` replaces its metadata. This process renews the entry every
        ``presence_ttl / 3`` seconds until :meth:`presence_leave`; if it dies, the entry
        lapses within ``presence_ttl`` and another process reports the leave.

        The group is told of joins and leaves in diffs gathered per ``presence_period``
        (see :data:`~kanal.layers.PRESENCE_DIFF_TYPE`): ``notify="message"`` sends
        ``{"type": "presence.diff", "group", "joins", "leaves"}`` to the group's members,
        ``"direct"`` the same as a JSON text frame to its direct subscribers, ``None``
        nothing. Raises :class:`~kanal.exceptions.PresenceNotSupported` on a backend
        without presence.
        """
        self._check_open()
        await self.presence_tracker.join(group, ref, key, meta, notify)

    async def presence_leave(self, group: str, ref: str) -> None:
        """Remove connection ``ref`` from ``group``'s presence (silent if it was not there)."""
        self._check_open()
        await self.presence_tracker.leave(group, ref)

    async def presence(self, group: str) -> Presences:
        """Who is present in ``group``: ``{key: {ref: meta, ...}, ...}``, one item per key."""
        self._check_open()
        return await self.presence_tracker.read(group)

    async def _presence_write(
        self,
        group: str,
        add: Sequence[tuple[str, bytes]],
        renew: Sequence[str],
        remove: Sequence[str],
        ttl: float,
    ) -> tuple[list[str], list[tuple[str, bytes]]]:
        """The backend's hook: change ``group``'s presence entries in one atomic step.

        Entries whose deadline passed are removed first. Then ``add`` entries
        (``(ref, data)``) are put with the deadline now + ``ttl`` (replacing the data of a
        ref already there), ``renew`` refs present get that deadline, ``remove`` refs are
        removed. Returns the refs of ``add`` and ``renew`` that were absent, and the
        entries removed, expired or asked for, as ``(ref, data)``. A backend that keeps
        presence implements this and :meth:`_presence_read`, and adds ``"presence"`` to
        its ``extensions``.
        """
        raise self._no_presence()

    async def _presence_read(self, group: str) -> list[tuple[str, bytes]]:
        """The backend's hook: ``group``'s unexpired entries as ``(ref, data)``."""
        raise self._no_presence()

    def _no_presence(self) -> PresenceNotSupported:
        return PresenceNotSupported(
            f"{type(self).__name__} does not keep presence; use a backend whose extensions "
            "include 'presence' (memory://, ipc://, redis://)"
        )

    async def group_history(
        self, group: str, since: Position | str | None = None, *, limit: int | None = None
    ) -> History:
        """The messages published to ``group`` after ``since``, oldest first.

        ``since`` is a position a message of the group carried (``message["position"]``)
        or its string; ``None`` returns every message kept. ``limit`` returns at most that
        many (the oldest; 0 for none: only the group's position). Raises
        :class:`~kanal.exceptions.HistoryGap` when some of the messages after ``since``
        are no longer kept, :class:`~kanal.exceptions.EpochChanged` when ``since`` is of
        a history that was lost, :class:`~kanal.exceptions.NoHistory` when the group
        keeps none. See ``docs/history.md``.
        """
        raise NoHistory(
            f"{type(self).__name__} keeps no group history (group {group!r})", group=group
        )

    def add_history(
        self, pattern: str | re.Pattern[str], policy: HistoryPolicy | Mapping[str, Any]
    ) -> None:
        """Have groups matching ``pattern`` keep history, ahead of the other patterns.

        What an application that needs history for its groups calls on the layer it is
        given (the chat example does). With a shared backend every process that publishes
        to those groups must do the same: the publisher's policy is the one applied.
        """
        if not self.supports_history:
            raise ConfigError(
                f"{type(self).__name__} keeps no group history (memory:// and redis:// do)"
            )
        self.history[:0] = compile_history({pattern: policy})
        self._history_cache.clear()

    def history_policy(self, group: str) -> HistoryPolicy | None:
        """The history ``group`` keeps: the first matching pattern's policy, or ``None``."""
        if not self.history:
            return None
        try:
            return self._history_cache[group]
        except KeyError:
            pass
        policy = next((p for pattern, p in self.history if pattern.match(group)), None)
        if len(self._history_cache) >= 10_000:
            self._history_cache.clear()
        self._history_cache[group] = policy
        return policy

    @staticmethod
    def _history_limit(limit: int | None) -> int | None:
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ConfigError(f"limit must be an integer >= 0 or None, not {limit!r}")
        return limit

    def _require_history(self, group: str) -> HistoryPolicy:
        policy = self.history_policy(group)
        if policy is None:
            raise NoHistory(
                f"group {group!r} keeps no history: no pattern of the layer's history "
                "option matches it",
                group=group,
            )
        return policy

    # -- observability ----------------------------------------------------------------------

    def stats(self) -> LayerStats:
        """A snapshot of what this layer instance sent, received, dropped and let expire."""
        return self._book.snapshot()

    def local_groups(self) -> dict[str, int]:
        """The groups this instance's channels were added to, with how many of them each.

        What this process knows without asking the backend (for ``kanal inspect``): on a
        shared backend a group's other members belong to other processes, which report
        their own. Memberships that lapsed unrenewed may still be counted until the
        backend's next sweep.
        """
        return {}

    # -- helpers for backends and for Channels compatibility ---------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise LayerClosed(f"{type(self).__name__} is closed")

    def get_capacity(self, channel: str) -> int:
        """The capacity of ``channel``: the first matching pattern's, else ``capacity``."""
        capacity = self._capacity_cache.get(channel)
        if capacity is None:
            capacity = self.capacity
            for pattern, value in self.channel_capacity:
                if pattern.match(channel):
                    capacity = value
                    break
            if len(self._capacity_cache) >= 10_000:
                self._capacity_cache.clear()
            self._capacity_cache[channel] = capacity
        return capacity

    def add_channel_capacity(self, pattern: str | re.Pattern[str], capacity: int) -> None:
        """Give channels matching ``pattern`` (glob or regex) this capacity, ahead of others.

        With a shared backend every process must do the same, since the sender's capacity
        is the one enforced.
        """
        self.channel_capacity[:0] = self.compile_capacities({pattern: capacity})
        self._capacity_cache.clear()

    @staticmethod
    def compile_capacities(
        channel_capacity: CapacityPatterns,
    ) -> list[tuple[re.Pattern[str], int]]:
        """Turn ``{glob or compiled regex: capacity}`` into an ordered list of matchers."""
        items = (
            channel_capacity.items() if isinstance(channel_capacity, Mapping) else channel_capacity
        )
        result: list[tuple[re.Pattern[str], int]] = []
        for pattern, value in items:
            if not (isinstance(value, int) and value > 0):
                raise ConfigError(
                    f"channel_capacity for {pattern!r} must be a positive integer, not {value!r}"
                )
            if isinstance(pattern, re.Pattern):
                result.append((pattern, value))
            elif isinstance(pattern, str):
                result.append((re.compile(fnmatch.translate(pattern)), value))
            else:
                raise ConfigError(
                    f"channel_capacity keys are glob strings or compiled regexes, not {pattern!r}"
                )
        return result

    # Channels' names for the validators, so code calling them on a layer keeps working.
    def valid_channel_name(self, name: str, receive: bool = False) -> bool:
        """Raise ``InvalidName`` unless ``name`` is a valid channel name; return True."""
        require_valid_channel_name(name, receive)
        return True

    def valid_group_name(self, name: str) -> bool:
        """Raise ``InvalidName`` unless ``name`` is a valid group name; return True."""
        require_valid_group_name(name)
        return True

    # Channels 4.3's names (channels_redis calls these on the layer).
    def require_valid_channel_name(self, name: str, receive: bool = False) -> bool:
        """Raise ``InvalidName`` unless ``name`` is a valid channel name; return True."""
        require_valid_channel_name(name, receive)
        return True

    def require_valid_group_name(self, name: str) -> bool:
        """Raise ``InvalidName`` unless ``name`` is a valid group name; return True."""
        require_valid_group_name(name)
        return True

    def valid_channel_names(self, names: list[str], receive: bool = False) -> bool:
        """Validate a list of channel names (Channels compatibility)."""
        if not isinstance(names, list):
            raise TypeError(f"channel names must be a list, not {type(names).__name__}")
        for name in names:
            require_valid_channel_name(name, receive)
        return True

    def non_local_name(self, name: str) -> str:
        """The part of ``name`` shared by all of one process's channels (up to ``!``)."""
        return non_local_name(name)

    def bound_loop(self) -> asyncio.AbstractEventLoop | None:
        """The running event loop this layer's state lives on, if it is tied to one.

        The synchronous facade runs its calls there; ``None`` means any loop will do.
        """
        return None

    def for_sync(self) -> Self:
        """Prepare the layer for sync code whose event loops each live for one call.

        ``async_to_sync(layer.group_send)(...)`` in a WSGI view or a Celery task runs on a
        loop made for that call alone. A backend whose state is tied to a loop (memory,
        Redis) then lives on the process's shared background loop whenever no running loop
        holds it, from the first such call on (without it, such a backend moves there by
        itself after one call: see :meth:`kanal.layers.InMemoryChannelLayer.for_sync`). For
        a backend with no such state, as this base assumes, it changes nothing. Returns the
        layer.
        """
        return self

    @property
    def sync(self) -> SyncChannelLayer:
        """A synchronous facade of this layer (see :class:`SyncChannelLayer`)."""
        if self._sync is None:
            from kanal.layers._sync import SyncChannelLayer

            self._sync = SyncChannelLayer(self)
        return self._sync

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} capacity={self.capacity} expiry={self.expiry:g}{state}>"
