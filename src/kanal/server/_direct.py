"""Direct delivery: the server writes a group's broadcasts to its subscribers itself.

An application subscribes a WebSocket to a group at the server through the ``kanal.groups``
ASGI extension (advertised in ``scope["extensions"]``)::

    await send({"type": "kanal.group.subscribe", "group": "chat.lobby"})
    await send({"type": "kanal.group.unsubscribe", "group": "chat.lobby"})

The process then holds one membership per group, whatever the number of its local
subscribers, through a :class:`GroupTransport` (the channel layer's side of this, which
the server cannot import: ``kanal.layers.DirectGroupTransport`` by default, named by
``Config.direct_groups``). A broadcast the transport hands over is framed once
(:func:`kanal.protocols.message_frame`) and the same bytes are written to every subscriber's
socket; no application instance wakes up. A close broadcast starts each subscriber's
closing handshake.

Each subscriber's unread bytes are bounded (``ws_direct_buffer_limit``): past it the
connection is closed with 1013 or, with ``ws_direct_overflow="drop"``, the frame is skipped
for it; both are counted in :class:`~kanal.server.ServerStats` and logged.

A subscribe may carry ``"since": "<epoch>:<offset>"`` (a group with history,
docs/history.md): live broadcasts to the connection are held back from then on, it is
subscribed, the broadcasts it missed are read from the transport and written, then the
held ones, less those the catch-up wrote already (by offset): in order, no gap, no
duplicate.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, Protocol

from kanal._tasks import detached_task
from kanal.exceptions import ServerError
from kanal.protocols import message_frame
from kanal.server._state import ServerStats
from kanal.typing import Message

__all__ = [
    "DIRECT_EXTENSION",
    "DirectGroups",
    "GroupTransport",
    "GroupTransportFactory",
    "Subscriber",
]

logger = logging.getLogger("kanal.server")

#: The key of the extension in ``scope["extensions"]``.
DIRECT_EXTENSION: Final = "kanal.groups"

#: What a transport calls with the broadcasts it received, oldest first: (group, message),
#: where the message holds ``text``, ``bytes``, or ``close`` (a code) and ``reason``.
Deliver = Callable[[Sequence[tuple[str, Message]]], None]


class GroupTransport(Protocol):
    """What brings one server process the broadcasts of the groups it subscribed to."""

    async def join(self, group: str) -> None:
        """Become a member of ``group`` (once per process), renewed until :meth:`leave`."""

    async def leave(self, group: str) -> None:
        """Stop being a member of ``group``."""

    async def close(self) -> None:
        """Leave every group and stop receiving."""


class HistoryTransport(GroupTransport, Protocol):
    """A transport that can also read a group's history (for subscribes with ``since``)."""

    async def history(self, group: str, since: str) -> Sequence[Message]:
        """The broadcasts to ``group`` after the position ``since``, oldest first; raises
        (``HistoryGap`` and the like) when they cannot all be recovered."""


#: Builds the transport, given the function to hand broadcasts to.
GroupTransportFactory = Callable[[Deliver], GroupTransport]


class Subscriber(Protocol):
    """What the hub needs from a connection (the WebSocket protocol)."""

    direct_groups: set[str] | None

    def write_direct(self, frame: bytes) -> None:
        """Write a framed broadcast, after what the application sent before it.

        The hub counted its bytes in ``ServerStats.ws_bytes_sent``; a subscriber that does
        not write it takes them off.
        """

    def close_direct(self, code: int, reason: str) -> None:
        """Start the closing handshake with ``code``."""


class DirectGroups:
    """One server process's subscriptions: group -> local subscribers, one membership each.

    The transport is built at the first subscription, so that a server whose application
    never subscribes never touches a channel layer.
    """

    __slots__ = (
        "_factory",
        "_joins",
        "_loop",
        "_ops",
        "_reads",
        "_recovering",
        "_stamps",
        "_transport",
        "groups",
        "stats",
    )

    def __init__(
        self, factory: GroupTransportFactory, stats: ServerStats, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._factory = factory
        self._loop = loop
        self.stats = stats
        self._transport: GroupTransport | None = None
        #: group -> the connections subscribed to it in this process.
        self.groups: dict[str, set[Subscriber]] = {}
        # A join still in progress, awaited by every subscriber that arrives meanwhile: a
        # subscription returns once broadcasts to the group reach this process.
        self._joins: dict[str, asyncio.Task[None]] = {}
        # The last membership change of each group: the next one waits for it, so that a
        # leave and a join in quick succession reach the layer in that order.
        self._ops: dict[str, asyncio.Task[None]] = {}
        # group -> connection catching up on it -> its _CatchUp (see there).
        self._recovering: dict[str, dict[Subscriber, _CatchUp]] = {}
        # (group, since) -> the catch-up read in progress, shared (see _catch_up).
        self._reads: dict[tuple[str, str], _Read] = {}
        # Orders holds and reads: a read serves the holds stamped before it.
        self._stamps = itertools.count()

    # From the application (through the connection's send)

    async def subscribe(self, connection: Subscriber, group: str, since: str | None = None) -> None:
        """Subscribe ``connection`` to ``group``; returns once the process is a member.

        With ``since`` (a position), then writes the broadcasts it missed (see the module's
        docstring); what the transport raises when they cannot be recovered is raised
        here, after the live ones held back were written.
        """
        if since is None:
            await self._subscribe(connection, group)
            return
        # From now on, until the catch-up is written, live broadcasts to it wait here.
        catch_up = _CatchUp(*_position(since), next(self._stamps))
        self._recovering.setdefault(group, {})[connection] = catch_up
        try:
            await self._subscribe(connection, group)
            await self._catch_up(connection, group, since, catch_up)
        finally:
            self._write_held(connection, group, catch_up)

    async def _subscribe(self, connection: Subscriber, group: str) -> None:
        subscribers = self.groups.get(group)
        if subscribers is None:
            subscribers = self.groups[group] = set()
            join = self._joins[group] = self._change(group, joining=True)
        else:
            join = self._joins.get(group)  # type: ignore[assignment]
        subscribers.add(connection)
        mine = connection.direct_groups
        if mine is None:
            mine = connection.direct_groups = set()
        mine.add(group)
        if join is not None:
            try:
                await asyncio.shield(join)
            except Exception:
                # The layer refused or is unreachable: nobody is subscribed to the group.
                for member in self.groups.pop(group, ()):
                    if member.direct_groups is not None:
                        member.direct_groups.discard(group)
                raise

    async def _catch_up(
        self, connection: Subscriber, group: str, since: str, catch_up: _CatchUp
    ) -> None:
        """Write the broadcasts after ``since``; ``catch_up.last`` follows what was written.

        Connections that reconnect together from the same position (a restarted server's
        clients) share one read and one framing of it: a read is shared with those whose
        broadcasts were held back before it started, so that none can fall between the
        read and its hold.
        """
        key = (group, since)
        read = self._reads.get(key)
        if read is None or read.stamp < catch_up.stamp:
            read = self._reads[key] = _Read(self._read(group, since), next(self._stamps))
            read.task.add_done_callback(lambda _: self._forget_read(key, read))
        data, last = await asyncio.shield(read.task)
        if data:
            connection.write_direct(data)
            self.stats.direct_frames += read.frames
        catch_up.last = max(catch_up.last, last)

    async def _read(self, group: str, since: str) -> tuple[bytes, int]:
        """The catch-up after ``since``: its frames as one write, and the last offset."""
        transport = self._transport
        history = getattr(transport, "history", None)
        if history is None:
            raise ServerError(
                f"subscribe with since: the direct delivery transport {transport!r} "
                "reads no history"
            )
        frames = []
        epoch, last = _position(since)
        for message in await history(group, since):
            frame = self._frame(message)
            if frame is None:
                continue  # a close broadcast of the past closes nobody now
            frames.append(frame)
            kept_epoch, offset = _position(message.get("position"))
            if kept_epoch == epoch:
                last = max(last, offset)
        read = self._reads.get((group, since))
        if read is not None:
            read.frames = len(frames)
        return b"".join(frames), last

    def _forget_read(self, key: tuple[str, str], read: _Read) -> None:
        if self._reads.get(key) is read:
            del self._reads[key]
        if not read.task.cancelled():
            read.task.exception()  # retrieved: raised to every connection that waited

    def _write_held(self, connection: Subscriber, group: str, catch_up: _CatchUp) -> None:
        """The catch-up is over (written, or failed): write the broadcasts held back
        meanwhile, less those it wrote already."""
        held, catch_up.held = catch_up.held, None
        for message, frame in held or ():
            if catch_up.passes(message):
                connection.write_direct(frame)
        if catch_up.done:
            self._end_catch_up(connection, group, catch_up)

    def _end_catch_up(self, connection: Subscriber, group: str, catch_up: _CatchUp) -> None:
        recovering = self._recovering.get(group)
        if recovering is not None and recovering.get(connection) is catch_up:
            del recovering[connection]
            if not recovering:
                del self._recovering[group]

    def _held_back(
        self, connection: Subscriber, group: str, message: Message, frame: bytes
    ) -> bool:
        """A live broadcast for a connection catching up: True if it is not to be written
        now (held back, or written by the catch-up already)."""
        catch_up = self._recovering[group][connection]
        if catch_up.held is not None:
            catch_up.held.append((message, frame))
            return True
        if catch_up.passes(message):
            if catch_up.done:
                self._end_catch_up(connection, group, catch_up)
            return False
        return True

    async def unsubscribe(self, connection: Subscriber, group: str) -> None:
        """Unsubscribe ``connection`` from ``group`` (nothing if it was not subscribed)."""
        mine = connection.direct_groups
        if mine is not None:
            mine.discard(group)
        self._drop(connection, group)

    def forget(self, connection: Subscriber) -> None:
        """The connection is over: unsubscribe it from everything."""
        mine = connection.direct_groups
        if mine:
            connection.direct_groups = None
            for group in mine:
                self._drop(connection, group)

    def _drop(self, connection: Subscriber, group: str) -> None:
        recovering = self._recovering.get(group)
        if recovering is not None and connection in recovering:
            del recovering[connection]
            if not recovering:
                del self._recovering[group]
        subscribers = self.groups.get(group)
        if subscribers is None:
            return
        subscribers.discard(connection)
        if not subscribers:
            del self.groups[group]
            self._change(group, joining=False)

    def _change(self, group: str, *, joining: bool) -> asyncio.Task[None]:
        previous = self._ops.get(group)
        transport = self._transport
        if transport is None:
            transport = self._transport = self._factory(self.deliver)

        async def change() -> None:
            if previous is not None:
                await asyncio.wait([previous])  # its outcome was reported already
            if joining:
                await transport.join(group)
                return
            try:
                await transport.leave(group)
            except Exception as exc:
                # The membership expires on its own; nobody waits for this.
                logger.warning("leaving group %r for direct delivery failed: %r", group, exc)

        task = detached_task(change(), loop=self._loop)
        self._ops[group] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._ops.get(group) is finished:
                del self._ops[group]
            if self._joins.get(group) is finished:
                del self._joins[group]
            if not finished.cancelled():
                finished.exception()  # retrieved: a failed join is raised to its subscribers

        task.add_done_callback(done)
        return task

    # From the transport

    def deliver(self, batch: Sequence[tuple[str, Message]]) -> None:
        """Write broadcasts to the local subscribers of their groups, each framed once.

        Several broadcasts received together reach a subscriber as one write.
        """
        groups = self.groups
        stats = self.stats
        if len(batch) == 1:
            group, message = batch[0]
            subscribers = groups.get(group)
            if not subscribers:
                return
            frame = self._frame(message)
            stats.direct_messages += 1
            if frame is None:
                self._close(subscribers, message)
                return
            stats.direct_frames += len(subscribers)
            # Bytes counted here, once per broadcast; a subscriber that skips it uncounts.
            stats.ws_bytes_sent += len(frame) * len(subscribers)
            recovering = self._recovering.get(group)
            for connection in subscribers:
                if (
                    recovering
                    and connection in recovering
                    and self._held_back(connection, group, message, frame)
                ):
                    continue
                connection.write_direct(frame)
            return
        pending: dict[Subscriber, list[bytes]] = {}
        for group, message in batch:
            subscribers = groups.get(group)
            if not subscribers:
                continue
            stats.direct_messages += 1
            frame = self._frame(message)
            if frame is None:
                for connection in subscribers:  # what came before the close goes first
                    parts = pending.pop(connection, None)
                    if parts:
                        connection.write_direct(b"".join(parts))
                self._close(subscribers, message)
                continue
            stats.direct_frames += len(subscribers)
            stats.ws_bytes_sent += len(frame) * len(subscribers)
            recovering = self._recovering.get(group)
            for connection in subscribers:
                if (
                    recovering
                    and connection in recovering
                    and self._held_back(connection, group, message, frame)
                ):
                    continue
                parts = pending.get(connection)
                if parts is None:
                    pending[connection] = [frame]
                else:
                    parts.append(frame)
        for connection, parts in pending.items():
            connection.write_direct(parts[0] if len(parts) == 1 else b"".join(parts))

    @staticmethod
    def _frame(message: Message) -> bytes | None:
        # The position is in the text already, if the sender asked for it (the layer's
        # side puts it there: kanal.layers.direct_text).
        text = message.get("text")
        if text is not None:
            return message_frame(text)
        data = message.get("bytes")
        if data is not None:
            return message_frame(data)
        return None  # a close

    @staticmethod
    def _close(subscribers: set[Subscriber], message: Message) -> None:
        code = message.get("close")
        if type(code) is not int:
            code = 1000
        reason = message.get("reason")
        # Each connection closes (and leaves its groups) later, in connection_lost: the
        # set is not changed while it is iterated.
        for connection in list(subscribers):
            connection.close_direct(code, reason if isinstance(reason, str) else "")

    async def close(self) -> None:
        """Leave every group (server shutdown)."""
        self.groups.clear()
        transport = self._transport
        self._transport = None
        if transport is not None:
            try:
                await transport.close()
            except Exception as exc:
                logger.warning("closing the direct delivery transport failed: %r", exc)


def _position(value: object) -> tuple[str, int]:
    """``"<epoch>:<offset>"`` -> ``(epoch, offset)``; ``("", -1)`` for anything else (no
    position: a broadcast to a group without history is never taken for a duplicate)."""
    if isinstance(value, str):
        epoch, _, offset = value.rpartition(":")
        if offset.isdigit():
            return epoch, int(offset)
    return "", -1


class _CatchUp:
    """A connection catching up on a group (a subscribe with ``since``).

    While its catch-up is read and written, the live broadcasts wait in ``held``. After
    it, live broadcasts the catch-up wrote already may still arrive (the history is
    written before the broadcast reaches this process): those up to ``last`` of the same
    epoch are skipped, until the first newer one, which ends the catch-up (``done``).
    """

    __slots__ = ("done", "epoch", "held", "last", "stamp")

    def __init__(self, epoch: str, last: int, stamp: int) -> None:
        self.epoch = epoch
        self.last = last
        self.stamp = stamp
        self.held: list[tuple[Message, bytes]] | None = []
        self.done = False

    def passes(self, message: Message) -> bool:
        """Whether a live broadcast is new to the connection (and so written)."""
        epoch, offset = _position(message.get("position"))
        if epoch == self.epoch and offset <= self.last:
            return False
        self.done = True
        return True


class _Read:
    """A catch-up read of the history, shared by the connections it may serve."""

    __slots__ = ("frames", "stamp", "task")

    def __init__(self, read: Coroutine[Any, Any, tuple[bytes, int]], stamp: int) -> None:
        self.task = asyncio.get_running_loop().create_task(read)
        self.stamp = stamp
        self.frames = 0
