"""Group history: positions, the per-pattern policy, and the in-process store.

A group whose name matches one of a layer's ``history`` patterns keeps its last messages
(at most ``size`` of them, none older than ``ttl`` seconds). Each message published to it
gets a :class:`Position`: an ``offset`` (1, 2, 3, ... in publishing order) within an
``epoch`` (a random name given to the history when it starts). The position travels in the
message (``message["position"]``, as ``"<epoch>:<offset>"``), so that a client can say
where it stopped; ``group_history(group, since=position)`` returns what came after it, or
raises :class:`~kanal.exceptions.HistoryGap` (too much or too old to recover) or
:class:`~kanal.exceptions.EpochChanged` (the history was lost: a restarted Redis, a flush).
``docs/history.md`` has the semantics.

:class:`GroupHistories` is the store of one process (the memory backend's); the Redis
backend keeps the same thing in a stream per group (``layers/redis/_history.py``).
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kanal.exceptions import ConfigError, EpochChanged, HistoryGap, InvalidPosition

__all__ = [
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_HISTORY_TTL",
    "EPOCH_TTL",
    "POSITION_KEY",
    "GroupHistories",
    "History",
    "HistoryPatterns",
    "HistoryPolicy",
    "Position",
    "check_since",
    "compile_history",
    "new_epoch",
    "position_of",
]

#: The key of a message's position in messages of a group with history.
POSITION_KEY: Final = "position"
# Centrifugo's usual numbers: a room's last hundred lines, for five minutes; enough for a
# phone that lost its network in a tunnel or a laptop woken from sleep.
DEFAULT_HISTORY_SIZE: Final = 100
DEFAULT_HISTORY_TTL: Final = 300.0
#: How long a group's epoch and last offset outlive its last publish, in seconds. Longer
#: than the messages (``ttl``): a client whose position is still the latest one after a
#: quiet hour missed nothing, and is told so, instead of being told to reload.
EPOCH_TTL: Final = 86_400.0

_EPOCH_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z", re.ASCII)


_epoch_prefix = secrets.token_hex(6)
_epochs = itertools.count(1)


def _new_epoch_prefix() -> None:
    # A forked worker must not propose the epochs its parent and siblings propose.
    global _epoch_prefix
    _epoch_prefix = secrets.token_hex(6)


os.register_at_fork(after_in_child=_new_epoch_prefix)


def new_epoch() -> str:
    """A fresh epoch name: a history started again must not look like the one it
    replaces. Random per process, then a counter: the Redis layer proposes one with every
    publish, in case the history is missing, so this makes no system call."""
    return f"{_epoch_prefix}{next(_epochs):x}"


@dataclass(frozen=True, slots=True)
class Position:
    """Where a message stands in its group's history: ``offset`` within ``epoch``.

    ``str(position)`` is ``"<epoch>:<offset>"``, what messages carry and what a client
    sends back (``?since=...``); :meth:`parse` reads it. Offset 0 is the position before
    the first message of an epoch.
    """

    epoch: str
    offset: int

    def __post_init__(self) -> None:
        if not isinstance(self.epoch, str) or not _EPOCH_RE.match(self.epoch):
            raise InvalidPosition(f"invalid history epoch {self.epoch!r}")
        if type(self.offset) is not int or self.offset < 0:
            raise InvalidPosition(f"invalid history offset {self.offset!r}")

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, value: str | Position) -> Position:
        """``"a1b2c3:17"`` -> ``Position("a1b2c3", 17)``; a Position is returned as it is."""
        if isinstance(value, Position):
            return value
        if not isinstance(value, str):
            raise InvalidPosition(f"a history position is a str, not {type(value).__name__}")
        epoch, sep, offset = value.rpartition(":")
        if not sep or not offset.isascii() or not offset.isdigit() or len(offset) > 19:
            raise InvalidPosition(
                f"invalid history position {value[:80]!r}: expected <epoch>:<offset>"
            )
        return cls(epoch, int(offset))


def position_of(message: Mapping[str, Any]) -> Position | None:
    """The position a message of a group with history carries, or ``None``."""
    raw = message.get(POSITION_KEY)
    if raw is None:
        return None
    return Position.parse(raw)


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How much of a group's history is kept: at most ``size`` messages, ``ttl`` seconds."""

    size: int = DEFAULT_HISTORY_SIZE
    ttl: float = DEFAULT_HISTORY_TTL

    def __post_init__(self) -> None:
        if type(self.size) is not int or self.size <= 0:
            raise ConfigError(f"history size must be a positive integer, not {self.size!r}")
        if isinstance(self.ttl, bool) or not isinstance(self.ttl, (int, float)) or not self.ttl > 0:
            raise ConfigError(f"history ttl must be a positive number of seconds, not {self.ttl!r}")
        object.__setattr__(self, "ttl", float(self.ttl))


@dataclass(frozen=True, slots=True)
class History:
    """What :meth:`~kanal.layers.BaseChannelLayer.group_history` returns.

    ``messages`` are the kept messages after the position asked for, oldest first, each
    with its ``"position"``; ``position`` is the group's latest position (that of the last
    message published, or offset 0 of the current epoch), where a client resumes from.
    """

    messages: list[dict[str, Any]]
    position: Position


_Pattern = str | re.Pattern[str]
_PolicyLike = HistoryPolicy | Mapping[str, Any]
#: ``{"room.*": {"size": 100, "ttl": 300}}`` or ``[(pattern, policy), ...]``.
HistoryPatterns = Mapping[_Pattern, _PolicyLike] | Iterable[tuple[_Pattern, _PolicyLike]]


def compile_history(spec: HistoryPatterns | None) -> list[tuple[re.Pattern[str], HistoryPolicy]]:
    """Turn the ``history`` option into an ordered list of (matcher, policy); first wins.

    Keys are glob strings (``"room.*"``) or compiled regexes, as for ``channel_capacity``;
    values a :class:`HistoryPolicy` or a dict of its fields.
    """
    if not spec:
        return []
    items = spec.items() if isinstance(spec, Mapping) else spec
    result: list[tuple[re.Pattern[str], HistoryPolicy]] = []
    for pattern, value in items:
        if isinstance(value, HistoryPolicy):
            policy = value
        elif isinstance(value, Mapping):
            unknown = set(value) - {"size", "ttl"}
            if unknown:
                raise ConfigError(
                    f"history for {pattern!r}: unknown keys {sorted(unknown)} (size, ttl)"
                )
            policy = HistoryPolicy(**value)
        else:
            raise ConfigError(
                f"history for {pattern!r} must be a dict with size and ttl, not {value!r}"
            )
        if isinstance(pattern, re.Pattern):
            result.append((pattern, policy))
        elif isinstance(pattern, str):
            result.append((re.compile(fnmatch.translate(pattern)), policy))
        else:
            raise ConfigError(f"history keys are glob strings or compiled regexes, not {pattern!r}")
    return result


@dataclass(slots=True)
class _Kept:
    """One group's history in this process."""

    epoch: str
    offset: int = 0
    last: float = 0.0  # when it was last published to (EPOCH_TTL counts from there)
    entries: deque[tuple[float, int, bytes]] = field(default_factory=deque)


class GroupHistories:
    """The histories of one process's groups (the memory backend's store).

    Entries are ``(time, offset, encoded message)``; the encoded message already holds its
    position, so a read decodes it as it stands. ``clock`` is the layer's.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._groups: dict[str, _Kept] = {}

    def _current(self, group: str, now: float) -> _Kept:
        kept = self._groups.get(group)
        if kept is None or kept.last + EPOCH_TTL <= now:
            kept = self._groups[group] = _Kept(new_epoch(), last=now)
        return kept

    def next_position(self, group: str) -> Position:
        """The position the next message published to ``group`` gets (nothing changes)."""
        kept = self._current(group, self._clock())
        return Position(kept.epoch, kept.offset + 1)

    def append(self, group: str, policy: HistoryPolicy, data: bytes) -> None:
        """Keep ``data``, encoded with :meth:`next_position`'s position, as the next entry."""
        now = self._clock()
        kept = self._current(group, now)
        kept.offset += 1
        kept.last = now
        entries = kept.entries
        entries.append((now, kept.offset, data))
        while len(entries) > policy.size or entries[0][0] + policy.ttl <= now:
            entries.popleft()

    def read(
        self,
        group: str,
        since: Position | None,
        policy: HistoryPolicy,
        decode: Callable[[bytes], dict[str, Any]],
        limit: int | None = None,
    ) -> History:
        """The kept messages after ``since`` (all kept ones for ``None``), oldest first, at
        most ``limit`` of them."""
        now = self._clock()
        kept = self._current(group, now)
        entries = kept.entries
        while entries and (len(entries) > policy.size or entries[0][0] + policy.ttl <= now):
            entries.popleft()
        position = Position(kept.epoch, kept.offset)
        start = 0
        if since is not None:
            check_since(group, since, position, entries[0][1] if entries else kept.offset + 1)
            start = len(entries) - (kept.offset - since.offset)
        end = len(entries) if limit is None else min(len(entries), start + limit)
        return History([decode(entries[i][2]) for i in range(start, end)], position)

    def clear(self) -> None:
        """Forget every history: the next publish to any group starts a new epoch."""
        self._groups.clear()


def check_since(group: str, since: Position, position: Position, first: int) -> None:
    """Raise unless every message after ``since`` is kept (``first``: the oldest kept offset,
    or the next offset when none is kept)."""
    if since.epoch != position.epoch or since.offset > position.offset:
        raise EpochChanged(
            f"group {group!r}: position {since} is not of its history's current epoch "
            f"(now {position}); what came after it is lost: reload, then resume from "
            f"{position}",
            group=group,
            since=since,
            position=position,
        )
    if since.offset + 1 < first:
        raise HistoryGap(
            f"group {group!r}: {position.offset - since.offset} messages came after "
            f"{since}, and the oldest {first - since.offset - 1} of them are no longer kept "
            f"(history size or ttl); reload, then resume from {position}",
            group=group,
            since=since,
            position=position,
        )
