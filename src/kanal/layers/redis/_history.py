"""Group history on Redis: a stream per group, written by the publish script itself.

The commands the layer sends for a group with history, and the reading of their replies.
A group's stream and its meta hash (epoch, last offset) live on the shard consistent
hashing gives the group's name; the publish to that shard is ``GROUP_SEND_HISTORY``
(``_scripts.py``), which adds the message to the stream and fans it out in one script, so
that the history and what members received cannot disagree. The other shards' fan-outs
then carry the position it returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kanal.layers._history import (
    EPOCH_TTL,
    POSITION_KEY,
    History,
    HistoryPolicy,
    Position,
    check_since,
    new_epoch,
)
from kanal.layers.redis._scripts import GROUP_HISTORY
from kanal.layers.redis._topology import Shard

__all__ = ["history_arguments", "history_command", "history_from_reply", "history_keys"]

_EPOCH_TTL_MS = int(EPOCH_TTL * 1000)


def history_keys(shard: Shard, group: str) -> tuple[str, str]:
    """The group's stream and meta hash on ``shard`` (its home shard)."""
    return shard.key("h", group), shard.key("hm", group)


def history_arguments(policy: HistoryPolicy) -> tuple[Any, ...]:
    """``GROUP_SEND_HISTORY``'s arguments after ``GROUP_SEND``'s seven."""
    return policy.size, max(1, int(policy.ttl * 1000)), new_epoch(), _EPOCH_TTL_MS


def history_command(
    shard: Shard, group: str, since: Position | None, policy: HistoryPolicy, limit: int | None
) -> tuple[Any, ...]:
    """The ``GROUP_HISTORY`` call reading ``group``'s messages after ``since`` (at most
    ``limit``)."""
    stream, meta = history_keys(shard, group)
    return (
        "EVALSHA", GROUP_HISTORY.sha, 2, stream, meta,
        "" if since is None else since.epoch, 0 if since is None else since.offset,
        max(1, int(policy.ttl * 1000)), new_epoch(), _EPOCH_TTL_MS,
        # With a since, at least the first entry after it: what tells whether it is kept.
        -1 if limit is None else max(limit, 1) if since is not None else limit,
    )  # fmt: skip


def history_from_reply(
    group: str,
    since: Position | None,
    reply: Any,
    decode: Callable[[bytes], dict[str, Any]],
    limit: int | None = None,
) -> History:
    """The :class:`History` of a ``GROUP_HISTORY`` reply; raises if ``since`` cannot be
    recovered from it (another epoch, or the first message after it no longer kept)."""
    raw_epoch, top, flat = reply
    epoch = raw_epoch.decode() if isinstance(raw_epoch, bytes) else str(raw_epoch)
    position = Position(epoch, int(top))
    offsets = [int(offset) for offset in flat[0::2]]
    if since is not None:
        check_since(group, since, position, offsets[0] if offsets else position.offset + 1)
    if limit is not None:
        offsets = offsets[:limit]
    messages = []
    for offset, payload in zip(offsets, flat[1::2], strict=False):
        message = decode(payload)
        message[POSITION_KEY] = f"{epoch}:{offset}"
        messages.append(message)
    return History(messages, position)
