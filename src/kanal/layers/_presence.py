"""Presence: who is in a group, kept alive by heartbeats and healed when a process dies.

The backend-independent half. A :class:`PresenceTracker` (one per layer instance, see
:attr:`BaseChannelLayer.presence_tracker`) holds this process's presences, renews them in
the backend every ``presence_ttl / 3`` seconds, and gathers the joins and leaves it makes or
notices into one diff per group per ``presence_period`` (Phoenix's presence diffs), which it
sends to the group. A backend only stores entries: two hooks of ``BaseChannelLayer``,

* ``_presence_write(group, add, renew, remove, ttl)``: one atomic change of a group's
  entries (``ref -> (deadline, data)``), expired entries removed first; returns the refs of
  ``add`` and ``renew`` that were absent, and the entries it removed (expired ones, and those
  of ``remove`` that were there), with their data. Whoever removes an entry reports its
  leave, so each leave is reported once however many processes look.
* ``_presence_read(group)``: the unexpired entries.

An entry's ``data`` is the layer's codec's encoding of ``{"type": "presence", "key", "meta",
"notify"}`` (validated, size-limited, encrypted where the layer encrypts): a process that
finds another's entry expired can say who left, and how the group wants to be told.
``docs/presence.md`` states the semantics and bounds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from kanal._tasks import detached_task
from kanal.exceptions import InvalidMessage, LayerClosed, PresenceNotSupported
from kanal.layers._direct import direct_message
from kanal.layers._names import require_valid_channel_name, require_valid_group_name

if TYPE_CHECKING:
    from kanal.layers._base import BaseChannelLayer

__all__ = [
    "PRESENCE_DIFF_TYPE",
    "Notify",
    "PresenceTracker",
    "Presences",
]

logger = logging.getLogger("kanal.layers")

#: The ``type`` of a presence diff (and of the JSON object a direct diff frame holds).
PRESENCE_DIFF_TYPE: Final = "presence.diff"
# Entries per backend call (a heartbeat of 10,000 presences is 10 calls) and per diff
# message (a diff of 10,000 joins is 10 messages, well under max_message_size each).
CHUNK: Final = 1000
MAX_KEY_LENGTH: Final = 256

#: How a group hears of joins and leaves: ``"message"`` (a layer message of type
#: ``presence.diff``, for consumers' ``presence_diff`` handlers), ``"direct"`` (a JSON text
#: frame that servers write to the group's direct subscribers) or ``None`` (not told).
Notify = Literal["message", "direct"] | None
#: ``presence(group)``: key -> {connection ref -> metadata}.
Presences = dict[str, dict[str, dict[str, Any]]]
_NOTIFY_MODES = ("message", "direct", None)


@dataclass(slots=True)
class _Entry:
    key: str
    meta: dict[str, Any]
    notify: Notify
    data: bytes


@dataclass(slots=True)
class _Diff:
    """One group's joins and leaves for one period: ref -> (key, meta)."""

    joins: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    leaves: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def join(self, ref: str, key: str, meta: dict[str, Any]) -> None:
        self.joins[ref] = (key, meta)

    def leave(self, ref: str, key: str, meta: dict[str, Any]) -> None:
        # A join in the same period is undone instead: the group never saw it. A leave
        # noted earlier in the period stays (it is the old entry an update replaced).
        if self.joins.pop(ref, None) is None:
            self.leaves[ref] = (key, meta)


def _by_key(items: list[tuple[str, tuple[str, dict[str, Any]]]]) -> Presences:
    result: Presences = {}
    for ref, (key, meta) in items:
        result.setdefault(key, {})[ref] = meta
    return result


class PresenceTracker:
    """One layer instance's presences: the heartbeat that keeps them, the diffs of changes.

    Made by the layer (:attr:`BaseChannelLayer.presence_tracker`); applications use the
    layer's ``presence_join``, ``presence_leave`` and ``presence``.
    """

    def __init__(self, layer: BaseChannelLayer, ttl: float, period: float) -> None:
        self.layer = layer
        #: Seconds an entry lives without a heartbeat.
        self.ttl = ttl
        #: Seconds over which joins and leaves are gathered into one diff per group.
        self.period = period
        #: Seconds between heartbeats: three per ttl, so one lost beat loses nothing.
        self.interval = ttl / 3
        #: False stops the renewals (to stand for a stalled process in tests); the next
        #: :meth:`heartbeat` restores what lapsed meanwhile.
        self.heartbeats = True
        #: Diff messages sent, and those that could not be (logged as well).
        self.diffs_sent = 0
        self.diffs_failed = 0
        # group -> ref -> this process's entry.
        self._local: dict[str, dict[str, _Entry]] = {}
        self._pending: dict[tuple[str, Notify], _Diff] = {}
        self._beat: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    # -- the layer's API ----------------------------------------------------------------

    async def join(
        self,
        group: str,
        ref: str,
        key: str,
        meta: Mapping[str, Any] | None,
        notify: Notify,
    ) -> None:
        """See :meth:`BaseChannelLayer.presence_join`."""
        require_valid_group_name(group)
        require_valid_channel_name(ref)
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise InvalidMessage(
                f"a presence key is a non-empty str of at most {MAX_KEY_LENGTH} characters, "
                f"not {key!r}"
            )
        if notify not in _NOTIFY_MODES:
            raise InvalidMessage(f"notify must be 'message', 'direct' or None, not {notify!r}")
        if meta is None:
            meta = {}
        if not isinstance(meta, Mapping):
            raise InvalidMessage(f"presence metadata must be a dict, not {type(meta).__name__}")
        meta = dict(meta)
        data = self.layer.codec.encode(
            {"type": "presence", "key": key, "meta": meta, "notify": notify},
            f"presence of group {group}",
        )
        if notify == "direct":
            try:
                json.dumps(meta)
            except (TypeError, ValueError) as exc:
                raise InvalidMessage(
                    f"presence metadata for notify='direct' must be JSON-serialisable ({exc})"
                ) from None
        # Kept before the write: one that fails (Redis unreachable) is written by the next
        # heartbeat, and its join reported then.
        entries = self._local.setdefault(group, {})
        old = entries.get(ref)
        entry = entries[ref] = _Entry(key, dict(meta), notify, data)
        self._start()
        try:
            absent, gone = await self.layer._presence_write(group, [(ref, data)], (), (), self.ttl)
        except PresenceNotSupported:
            self._forget(group, ref)  # nothing for a heartbeat to renew
            raise
        self._report_gone(group, gone)
        if ref in absent:
            self._diff(group, notify).join(ref, key, entry.meta)
        elif old is not None and (old.key, old.meta) != (key, entry.meta):
            self._diff(group, old.notify).leave(ref, old.key, old.meta)
            self._diff(group, notify).join(ref, key, entry.meta)

    async def leave(self, group: str, ref: str) -> None:
        """See :meth:`BaseChannelLayer.presence_leave`."""
        require_valid_group_name(group)
        require_valid_channel_name(ref)
        self._forget(group, ref)
        _, gone = await self.layer._presence_write(group, (), (), [ref], self.ttl)
        # Our own entry is among them if it was still there; if another process found it
        # expired first, that one reported the leave.
        self._report_gone(group, gone)

    def _forget(self, group: str, ref: str) -> None:
        entries = self._local.get(group)
        if entries is not None:
            entries.pop(ref, None)
            if not entries:
                del self._local[group]

    async def read(self, group: str) -> Presences:
        """See :meth:`BaseChannelLayer.presence`."""
        require_valid_group_name(group)
        result: Presences = {}
        for ref, data in await self.layer._presence_read(group):
            decoded = self._decode(group, data)
            if decoded is not None:
                result.setdefault(decoded.key, {})[ref] = decoded.meta
        return result

    # -- heartbeats -----------------------------------------------------------------------

    def _start(self) -> None:
        beat = self._beat
        if beat is None or beat.done() or beat.get_loop().is_closed():
            self._beat = detached_task(self._beat_forever(), name="kanal-presence-heartbeat")

    async def _beat_forever(self) -> None:
        while self._local:
            await asyncio.sleep(self.interval)
            if not self.heartbeats:
                continue
            try:
                await self.heartbeat()
            except (LayerClosed, PresenceNotSupported):
                return
            except Exception as exc:
                # An outage: the next beat tries again; entries live ttl, three beats.
                logger.warning(
                    "presence: a heartbeat failed (%r); retrying in %gs", exc, self.interval
                )
        self._beat = None

    async def heartbeat(self) -> None:
        """Renew this process's presences now (the heartbeat task calls it every interval).

        Entries found missing (they lapsed while this process stalled, or the backend lost
        them) are written again and their joins reported; the expired entries of other
        processes that the renewal removed are reported as leaves. The renewals of up to
        ``CHUNK`` groups are issued at once (a batching backend sends them in one round
        trip); a failure is raised once all have run.
        """
        work = [
            (group, refs[start : start + CHUNK])
            for group, entries in list(self._local.items())
            for refs in [list(entries)]
            for start in range(0, len(refs), CHUNK)
        ]
        for first in range(0, len(work), CHUNK):
            results = await asyncio.gather(
                *(self._renew(group, refs) for group, refs in work[first : first + CHUNK]),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _renew(self, group: str, refs: list[str]) -> None:
        absent, gone = await self.layer._presence_write(group, (), refs, (), self.ttl)
        self._report_gone(group, gone)
        entries = self._local.get(group) or {}
        lost = [(ref, entries[ref]) for ref in absent if ref in entries]
        if not lost:
            return
        added, gone = await self.layer._presence_write(
            group, [(ref, entry.data) for ref, entry in lost], (), (), self.ttl
        )
        self._report_gone(group, gone)
        back = set(added)
        for ref, entry in lost:
            if ref in back:
                self._diff(group, entry.notify).join(ref, entry.key, entry.meta)
        logger.info(
            "presence: %d presence(s) of group %r had lapsed and were restored", len(back), group
        )

    # -- diffs ----------------------------------------------------------------------------

    def _decode(self, group: str, data: bytes) -> _Entry | None:
        try:
            raw = self.layer.codec.decode(data)
            key, meta, notify = raw["key"], raw["meta"], raw.get("notify")
        except Exception as exc:  # another key, another version: say so, skip it
            logger.warning("presence: an entry of group %r cannot be read: %r", group, exc)
            return None
        return _Entry(key, meta, notify if notify in _NOTIFY_MODES else None, data)

    def _report_gone(self, group: str, gone: Sequence[tuple[str, bytes]]) -> None:
        for ref, data in gone:
            entry = self._decode(group, data)
            if entry is not None:
                self._diff(group, entry.notify).leave(ref, entry.key, entry.meta)

    def _diff(self, group: str, notify: Notify) -> _Diff:
        if notify is None:
            return _Diff()  # nobody is told: noted nowhere
        pending = self._pending.get((group, notify))
        if pending is None:
            pending = self._pending[group, notify] = _Diff()
            asyncio.get_running_loop().call_later(self.period, self._flush_soon, group, notify)
        return pending

    def _flush_soon(self, group: str, notify: Notify) -> None:
        task = detached_task(self._flush(group, notify))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, group: str, notify: Notify) -> None:
        diff = self._pending.pop((group, notify), None)
        layer = self.layer
        if diff is None or layer.closed or not (diff.joins or diff.leaves):
            return
        joins, leaves = list(diff.joins.items()), list(diff.leaves.items())
        # Leaves first: a client applies a diff's leaves, then its joins, so an update (the
        # old entry's leave, the new one's join) ends with the new one.
        for start in range(0, max(len(joins), len(leaves)), CHUNK):
            body = {
                "type": PRESENCE_DIFF_TYPE,
                "group": group,
                "joins": _by_key(joins[start : start + CHUNK]),
                "leaves": _by_key(leaves[start : start + CHUNK]),
            }
            try:
                if notify == "direct":
                    await layer.group_send(group, direct_message(group, text=json.dumps(body)))
                else:
                    await layer.group_send(group, body)
            except Exception as exc:  # the layer counted what group_send lost
                self.diffs_failed += 1
                logger.warning("presence: sending a diff to group %r failed: %r", group, exc)
            else:
                self.diffs_sent += 1

    # -- lifecycle ------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget every presence of this process and the diffs not yet sent (a flush)."""
        self._local.clear()
        self._pending.clear()

    def stop(self) -> None:
        """Stop the heartbeat (the layer closes); the entries lapse within ``ttl``."""
        beat, self._beat = self._beat, None
        for task in [beat, *self._flushes]:
            if task is None or task.done():
                continue
            loop = task.get_loop()
            if loop is asyncio._get_running_loop():
                task.cancel()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)
