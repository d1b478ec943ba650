"""The ``ipc://`` channel layer: the processes of one host, no server to run.

Each process keeps the messages of its own channels in its own memory, exactly as
``memory://`` does (this class is the in-memory layer plus routing), and listens on a Unix
socket of the layer's directory. A message for another process's channel is written to that
process's socket; the receiving process puts it into the channel there. So:

* **Process-specific channels** (``new_channel()``: ``specific.<token>!<id>``) name their
  process by its token: a send goes straight to that process's socket.
* **Named channels** (``"jobs"``, read by several workers) live in one process, their
  *home*: the first process that used the name, recorded in the shared database. Sends go
  to the home; a receiver elsewhere *claims* a message (one per waiting receive) and the
  home hands each message to exactly one claimer, or to a receiver of its own.
* **Groups** are rows of the shared database (``_state.py``); ``group_send`` reads them
  (cached until some process changes them) and writes one frame per receiving process.
* **Capacity**: a process counts what it sent to each remote channel and the receiving
  process reports what left it, so ``send`` raises ``ChannelFull`` as on the other
  backends; the receiving process checks again on arrival (several senders may race), and a
  message it cannot take is reported back and counted as dropped in the sender's
  ``stats()``, and logged. ``group_send``'s drops are counted the same way.
* **Dead processes** are told by their lock (``_peers.py``): every process looks every
  second, and removes a dead one's memberships, homes and files. What a dead process held
  in memory is lost with it (delivery is at-most-once).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from kanal.exceptions import ChannelFull
from kanal.layers._base import Message
from kanal.layers._names import require_valid_channel_name, require_valid_group_name
from kanal.layers.ipc._paths import layer_directory
from kanal.layers.ipc._peering import GONE, MAX_ROUTES, PeeredLayer, _FromPeer
from kanal.layers.ipc._wire import GROUP, SEND

__all__ = ["IpcChannelLayer"]


class IpcChannelLayer(PeeredLayer):
    """A channel layer shared by the processes of one host, through Unix sockets.

    ``path`` is the layer's directory (``ipc:///run/myapp``); without it the layer is
    ``ipc://default`` under ``$XDG_RUNTIME_DIR`` or the temporary directory. Processes
    using the same directory share channels and groups; others are apart. Options are the
    in-memory layer's (``clock`` included: it measures expiry, and must be one shared by
    the processes, as ``time.monotonic`` is on one host). See ``docs/ipc.md``.
    """

    extensions: ClassVar[list[str]] = ["groups", "flush", "presence"]
    shared_across_processes: ClassVar[bool] = True
    #: Group history (docs/history.md) is not kept across processes yet: the in-memory
    #: layer's store would be one process's only, so it is refused plainly instead.
    supports_history: ClassVar[bool] = False
    #: Bytes that may wait to be written to one other process before sends to it are
    #: counted as dropped (``unavailable``): a process that stopped reading (``SIGSTOP``,
    #: a long pause) costs its senders at most this much memory each.
    max_backlog: int = 64 * 1024 * 1024

    @property
    def _stalled(self) -> ConnectionError:
        return ConnectionError(
            f"the receiving process is not reading: more than {self.max_backlog} bytes "
            "wait to be written to it"
        )

    @classmethod
    def url_arguments(cls, scheme: str, netloc: str, path: str) -> dict[str, Any]:
        """``ipc:///dir`` is a directory, ``ipc://name`` a name (see ``_paths.py``)."""
        return {"path": str(layer_directory(netloc, path))}

    @property
    def token(self) -> str | None:
        """This process's token in the layer (``None`` until the layer is first used)."""
        return self._registration.token if self._registration is not None else None

    # -- channels -----------------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        # Bound first: the name carries this process's token, and its socket must exist
        # before anyone can send to it.
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self.new_channel(prefix))
        return await super().new_channel(prefix)

    async def send(self, channel: str, message: Message) -> None:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self.send(channel, message))
        self._check_open()
        require_valid_channel_name(channel)
        token = self._route(channel)
        if token is None:
            return self._send_here(channel, message)
        data = self.codec.encode(message, channel)
        link = self._link(token)
        if link is None:
            if "!" not in channel:  # a named channel whose home died: it has a new one
                return await self.send(channel, message)
            self._book.channel(channel).sent += 1
            self._book.totals.sent += 1
            self._book.unavailable(channel, None)
            self._drops.unavailable("send", channel, GONE)
            return
        if link.backlogged(self.max_backlog):
            self._book.channel(channel).sent += 1
            self._book.totals.sent += 1
            self._book.unavailable(channel, None)
            self._drops.unavailable("send", channel, self._stalled)
            return
        inflight = link.inflight.get(channel, 0)
        capacity = self.get_capacity(channel)
        if inflight >= capacity:
            raise ChannelFull(
                f"channel {channel!r} is full ({capacity} messages waiting); "
                "the message was not sent",
                channel=channel,
                capacity=capacity,
            )
        link.inflight[channel] = inflight + 1
        link.write([SEND, channel, self._clock() + self.expiry, data])
        self._book.channel(channel).sent += 1
        self._book.totals.sent += 1

    async def receive(self, channel: str) -> Message:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            handed = await self._take_home(
                lambda: self._receive_item(channel), lambda item: self._give_back(channel, item)
            )
            return self._open(handed[1])
        if "!" in channel:
            # A process-specific channel: the in-memory layer's steps, awaited here (one
            # coroutine per receive, not two: a fan-out costs one receive per member).
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
        else:
            item = await self._receive_named(channel)
        data = item[1]
        if type(data) is _FromPeer:
            data.link.report_taken(channel)
        return self._open(data)

    async def _receive_item(self, channel: str) -> tuple[float, bytes]:
        if "!" in channel:
            item = await super()._receive_item(channel)
        else:
            item = await self._receive_named(channel)
        data = item[1]
        if type(data) is _FromPeer:
            data.link.report_taken(channel)
        return item

    async def _receive_named(self, channel: str) -> tuple[float, bytes]:
        """Receive from named ``channel``: claim a message from its home if that is not here."""
        self._check_open()
        require_valid_channel_name(channel, receive=True)
        source = self._channels.get(channel)
        if source is not None and source.messages:
            return await super()._receive_item(channel)
        home = self._route(channel)
        if home is None:
            return await super()._receive_item(channel)
        self._send_claim(channel, home, 1)
        try:
            return await super()._receive_item(channel)
        except BaseException:
            # The claim is withdrawn; a message already on its way waits here for the next
            # receive (or expires, counted).
            home = self._route(channel)
            link = self._links.get(home) if home is not None else None
            if link is not None and link.claims.get(channel, 0) > 0:
                self._send_claim(channel, home, -1)
            raise

    def receive_nowait(self, channel: str) -> Message | None:
        """As the in-memory layer's: the next message if this process holds one already."""
        if self._closed or asyncio._get_running_loop() is not self._loop:
            return None
        source = self._channels.get(channel)
        if source is None or not source.messages or source.waiters:
            return None
        self._trim(source, self._clock())
        if not source.messages:
            return None
        _, data = source.messages.popleft()
        source.stats.received += 1
        self._book.totals.received += 1
        if type(data) is _FromPeer:
            data.link.report_taken(channel)
        if not source.messages and not source.in_heap:
            self._idle.add(channel)
            self._schedule_sweep()
        return self._open(data)

    # -- groups -------------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self.group_add(group, channel))
        self._check_open()
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        assert self._state is not None
        owner: str | None = None
        if "!" in channel:
            owner = self._route(channel) or self._client
        self._state.add_member(group, channel, owner, self._clock() + self.group_expiry)

    def local_groups(self) -> dict[str, int]:
        # The shared table knows whose each member is: this process's channels are counted.
        if self._state is None or self._closed:
            return {}
        return self._state.member_counts(self._client, self._clock())

    async def group_discard(self, group: str, channel: str) -> None:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self.group_discard(group, channel))
        self._check_open()
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        assert self._state is not None
        self._state.discard_member(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self.group_send(group, message))
        self._check_open()
        require_valid_group_name(group)
        data = self.codec.encode(message, f"group {group}")
        stats = self._book.group(group)
        stats.sent += 1
        totals = self._book.totals
        totals.group_sends += 1
        assert self._state is not None
        now = self._clock()
        members = self._state.members(group, now)
        if not members:
            return
        routes = self._group_routes.get(group)
        if routes is None or routes[0] is not members:
            routes = self._split(group, members)
        _, local, remote = routes
        deadline = now + self.expiry
        delivered = 0
        channels = self._channels
        for name in local:
            target = channels.get(name) or self._channel(name)
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
        for token, names in remote.items():
            link = self._link(token)
            if link is None:  # dead: its memberships are forgotten now
                for name in names:
                    self._book.unavailable(name, group)
                    self._drops.unavailable("group_send", group, GONE)
                continue
            if link.backlogged(self.max_backlog):
                for name in names:
                    self._book.unavailable(name, group)
                    self._drops.unavailable("group_send", group, self._stalled)
                continue
            link.write([GROUP, group, names, deadline, data])
            delivered += len(names)
        stats.delivered += delivered
        totals.sent += delivered

    def _split(
        self, group: str, members: list[str]
    ) -> tuple[list[str], list[str], dict[str, list[str]]]:
        """``group``'s members by process: this one's, and the others' by token (cached)."""
        local: list[str] = []
        remote: dict[str, list[str]] = {}
        for name in members:
            token = self._route(name)
            if token is None:
                local.append(name)
            else:
                remote.setdefault(token, []).append(name)
        routes = (members, local, remote)
        if len(self._group_routes) >= MAX_ROUTES:
            self._group_routes.clear()
        self._group_routes[group] = routes
        return routes

    # -- presence (the store behind kanal.layers._presence) ------------------------------------

    async def _presence_write(
        self,
        group: str,
        add: Any,
        renew: Any,
        remove: Any,
        ttl: float,
    ) -> tuple[list[str], list[tuple[str, bytes]]]:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self._presence_write(group, add, renew, remove, ttl))
        self._check_open()
        assert self._state is not None
        now = self._clock()
        return self._state.presence_write(group, add, renew, remove, now + ttl, now)

    async def _presence_read(self, group: str) -> list[tuple[str, bytes]]:
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(lambda: self._presence_read(group))
        self._check_open()
        assert self._state is not None
        return self._state.presence_read(group, self._clock())

    # -- lifecycle ----------------------------------------------------------------------------

    async def flush(self) -> None:
        """This process's messages, and every group and presence of the layer, are gone."""
        if asyncio.get_running_loop() is not self._loop and not self._claim():
            return await self._forward(self.flush)
        await super().flush()
        assert self._state is not None
        self._state.clear()
        for link in self._links.values():
            link.inflight.clear()
        self._group_routes.clear()

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
        await self._leave()
        self._unbind()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} {str(self.directory)!r} capacity={self.capacity}{state}>"
