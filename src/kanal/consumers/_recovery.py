"""A consumer's catch-up on groups with history: what it missed, then live, each once.

``join_group(group, since=position)`` (``_base.py``) joins first, then reads the group's
history since that position and hands each missed message to the consumer's handlers;
the live messages that arrived meanwhile come next, and :class:`GroupPositions` drops
those the catch-up already handled, by offset. It also notices a live message whose
offset skips some (one dropped on the way: a full channel) and fetches the missing ones
from the history first, so that inside the history's window a connected consumer gets
every message at least once, and exactly once after this de-duplication.

Positions are kept per epoch: an epoch names one group's history (a random name given when
it starts), so a message's position says which joined group it belongs to without the
message naming the group.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kanal.exceptions import HistoryGap
from kanal.layers import BaseChannelLayer, History, Position
from kanal.typing import Message

__all__ = ["GroupPositions"]

logger = logging.getLogger("kanal.consumers")

Dispatch = Callable[[Message], Awaitable[bool]]


class GroupPositions:
    """The last offset a consumer handled in each history it follows (epoch -> group, offset).

    ``duplicates`` counts the messages dropped because they were handled already;
    ``filled`` those fetched from the history to fill a gap in live delivery.
    """

    __slots__ = ("_epochs", "_groups", "duplicates", "filled")

    def __init__(self) -> None:
        self._epochs: dict[str, tuple[str, int]] = {}
        self._groups: dict[str, str] = {}  # group -> its current epoch
        self.duplicates = 0
        self.filled = 0

    def follow(self, group: str, position: Position) -> None:
        """Count ``group``'s messages from after ``position`` on (a new epoch replaces the
        group's old one)."""
        old = self._groups.get(group)
        if old is not None and old != position.epoch:
            self._epochs.pop(old, None)
        self._groups[group] = position.epoch
        self._epochs[position.epoch] = (group, position.offset)

    def forget(self, group: str) -> None:
        """Stop following ``group`` (it was left)."""
        epoch = self._groups.pop(group, None)
        if epoch is not None:
            self._epochs.pop(epoch, None)

    def position(self, group: str) -> Position | None:
        """The position of the last message of ``group`` handled, if followed."""
        epoch = self._groups.get(group)
        if epoch is None:
            return None
        return Position(epoch, self._epochs[epoch][1])

    async def admit(
        self,
        message: Message,
        layer: BaseChannelLayer | None,
        dispatch: Dispatch,
        on_gap: Callable[[str, HistoryGap], Awaitable[Any]],
    ) -> bool:
        """Hand ``message`` to ``dispatch`` unless it was handled already; first fill any gap
        before it from the history. Returns ``dispatch``'s verdict (``False``: the consumer
        is done), ``True`` for a message dropped as a duplicate."""
        raw = message.get("position")
        epoch, _, digits = raw.rpartition(":") if isinstance(raw, str) else ("", "", "")
        followed = self._epochs.get(epoch)
        if followed is None or not digits.isdigit():
            return await dispatch(message)  # a group this consumer does not follow
        group, last = followed
        offset = int(digits)
        if offset <= last:
            self.duplicates += 1
            return True
        if offset > last + 1 and layer is not None:
            # Live delivery skipped some (a full channel dropped them): the history has them.
            try:
                missed = await layer.group_history(group, since=Position(epoch, last))
            except HistoryGap as exc:
                await on_gap(group, exc)
            else:
                if not await self.replay(group, missed, dispatch, upto=offset - 1):
                    return False
        self._epochs[epoch] = (group, offset)
        return await dispatch(message)

    async def replay(
        self, group: str, history: History, dispatch: Dispatch, upto: int | None = None
    ) -> bool:
        """Hand the history's messages (up to offset ``upto``) to ``dispatch`` in order,
        each one once; ``False`` if the consumer is done."""
        for message in history.messages:
            raw = message.get("position")
            position = Position.parse(raw) if isinstance(raw, str) else None
            if position is None:
                continue
            if upto is not None and position.offset > upto:
                break
            followed = self._epochs.get(position.epoch)
            if followed is None or position.offset <= followed[1]:
                continue
            self._epochs[position.epoch] = (group, position.offset)
            self.filled += upto is not None
            if not await dispatch(message):
                return False
        return True
