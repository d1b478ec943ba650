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
import contextlib
import logging
import os
import socket
from typing import Any, ClassVar

from kanal.exceptions import ChannelFull
from kanal.layers._base import Message
from kanal.layers._memory import InMemoryChannelLayer, _Channel
from kanal.layers._names import require_valid_channel_name, require_valid_group_name
from kanal.layers.ipc import _peers
from kanal.layers.ipc._paths import layer_directory, make_private, private_directory
from kanal.layers.ipc._state import SharedState
from kanal.layers.ipc._wire import (
    CLAIM,
    DELIVER,
    DROPPED,
    GROUP,
    HELLO,
    SEND,
    TAKEN,
    Frame,
    Link,
)

__all__ = ["IpcChannelLayer"]

logger = logging.getLogger("kanal.layers")

# Seconds between looks for dead processes: what a dead one owned is gone within about this
# (well within any expiry), for the cost of one directory listing per second.
_PROBE_INTERVAL = 1.0
# Looks between deletions of lapsed membership rows (reads skip them already).
_EXPIRE_EVERY = 30
_MAX_ROUTES = 10_000
_GONE = ConnectionError("the receiving process has ended")


class _FromPeer(bytes):
    """A message's bytes that another process sent: who to tell when it leaves the channel."""

    link: Link


class IpcChannelLayer(InMemoryChannelLayer):
    """A channel layer shared by the processes of one host, through Unix sockets.

    ``path`` is the layer's directory (``ipc:///run/myapp``); without it the layer is
    ``ipc://default`` under ``$XDG_RUNTIME_DIR`` or the temporary directory. Processes
    using the same directory share channels and groups; others are apart. Options are the
    in-memory layer's (``clock`` included: it measures expiry, and must be one shared by
    the processes, as ``time.monotonic`` is on one host). See ``docs/ipc.md``.
    """

    extensions: ClassVar[list[str]] = ["groups", "flush", "presence"]
    shared_across_processes: ClassVar[bool] = True

    def __init__(self, path: str | os.PathLike[str] | None = None, **options: Any) -> None:
        super().__init__(**options)
        if path is None:
            self.directory = layer_directory("default", "")
        else:
            self.directory = layer_directory("", os.fspath(path))
        self._registration: _peers.Registration | None = None
        self._state: SharedState | None = None
        self._listener: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._server_task: asyncio.Task[asyncio.Server] | None = None
        self._probe: asyncio.TimerHandle | None = None
        self._probes = 0
        self._links: dict[str, Link] = {}  # connections this process made, by peer token
        self._incoming: set[Link] = set()
        # channel name -> the token of the process it lives in, or None: this one.
        self._routes: dict[str, str | None] = {}
        # group -> (the members list it was made from, local members, remote ones by token)
        self._group_routes: dict[str, tuple[list[str], list[str], dict[str, list[str]]]] = {}
        # Home side: named channel -> {claimer's connection: receives waiting there}.
        self._claimers: dict[str, dict[Link, int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def url_arguments(cls, scheme: str, netloc: str, path: str) -> dict[str, Any]:
        """``ipc:///dir`` is a directory, ``ipc://name`` a name (see ``_paths.py``)."""
        return {"path": str(layer_directory(netloc, path))}

    @property
    def token(self) -> str | None:
        """This process's token in the layer (``None`` until the layer is first used)."""
        return self._registration.token if self._registration is not None else None

    # -- joining the directory (on the loop the layer binds to) -------------------------------

    def _bound(self, loop: asyncio.AbstractEventLoop) -> None:
        super()._bound(loop)
        self._drop_connections()
        if self._registration is None or self._registration.pid != os.getpid():
            self._join()
        assert self._registration is not None
        path = self._registration.socket
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # ours, from a loop that ended
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(os.fspath(path))
        make_private(path)
        listener.listen(512)
        listener.setblocking(False)
        self._listener = listener
        # Connections made before the server task runs wait in the listen backlog.
        self._server_task = loop.create_task(loop.create_unix_server(self._accepted, sock=listener))
        self._probe = loop.call_later(_PROBE_INTERVAL, self._look_for_the_dead)

    def _join(self) -> None:
        """Take this process's place in the directory (a forked child takes its own)."""
        if self._registration is not None:
            self._registration.release()  # the parent's: a child only closes its copy
        private_directory(self.directory)
        with _peers.joining(self.directory):
            state = SharedState(self.directory)
            for token in _peers.dead_tokens(self.directory):
                state.forget_process(token)
                _peers.remove_files(self.directory, token)
            if not _peers.live_tokens(self.directory):
                state.wipe()  # nobody lives here: what is left is a dead run's
            self._registration = _peers.Registration(self.directory)
        self._state = state
        self._client = self._registration.token
        self._routes.clear()
        self._group_routes.clear()

    def _accepted(self) -> Link:
        assert self._loop is not None
        link = Link(self._loop, None, self._on_frame, self._on_lost)
        self._incoming.add(link)
        return link

    def _drop_connections(self) -> None:
        """Forget connections and the server of a previous home loop (it ended)."""
        for link in [*self._links.values(), *self._incoming]:
            link.lost = True
            with contextlib.suppress(Exception):
                if link.transport is not None:
                    link.transport.abort()
        self._links.clear()
        self._incoming.clear()
        self._claimers.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.close()
            self._server = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    # -- routing ------------------------------------------------------------------------------

    def _route(self, channel: str) -> str | None:
        """The token of the process ``channel`` lives in, or ``None`` for this one."""
        routes = self._routes
        if channel in routes:
            return routes[channel]
        bang = channel.find("!")
        token: str | None
        if bang >= 0:
            head = channel[:bang]
            token = head[head.rfind(".") + 1 :]
            # A name not made by new_channel() of an ipc:// layer lives here (and expires).
            if token == self._client or not _peers.is_token(token):
                token = None
        else:
            token = self._home_of(channel)
        if len(routes) >= _MAX_ROUTES:
            routes.clear()
        routes[channel] = token
        return token

    def _home_of(self, channel: str) -> str | None:
        """The home of named ``channel`` (``None``: this process), taken if it has none."""
        assert self._state is not None
        for _ in range(3):
            home = self._state.home(channel, self._client)
            if home == self._client:
                return None
            if _peers.is_alive(self.directory, home):
                return home
            self._forget(home)
        return None

    def _link(self, token: str) -> Link | None:
        """The connection to process ``token``, made on first use; ``None`` if it is dead
        (what it owned is forgotten then)."""
        link = self._links.get(token)
        if link is None:
            if not _peers.is_alive(self.directory, token):
                self._forget(token)
                return None
            loop = self._loop
            assert loop is not None
            link = self._links[token] = Link(loop, token, self._on_frame, self._on_lost)
            link.write([HELLO, self._client])
            self._spawn(self._connect(link))
        return link

    async def _connect(self, link: Link) -> None:
        assert self._loop is not None and link.peer is not None
        path = os.fspath(_peers.socket_path(self.directory, link.peer))
        try:
            await self._loop.create_unix_connection(lambda: link, path)
        except OSError as exc:
            self._connection_failed(link, exc)

    def _spawn(self, coroutine: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            self._drops.unavailable("send", channel, _GONE)
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
            item = await self._take_home(
                lambda: self._receive_item(channel), lambda item: self._give_back(channel, item)
            )
            return self.codec.decode(item[1])
        if "!" in channel:
            # A process-specific channel: the in-memory layer's path, at its cost (one
            # coroutine, not two).
            item = await InMemoryChannelLayer._receive_item(self, channel)
        else:
            item = await self._receive_named(channel)
        data = item[1]
        if type(data) is _FromPeer:
            data.link.report_taken(channel)
        return self.codec.decode(data)

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

    def _send_claim(self, channel: str, home: str | None, count: int) -> None:
        if home is None:
            return
        link = self._link(home)
        if link is None:  # the home died: claim at the new one (this process, maybe)
            if count > 0:
                self._send_claim(channel, self._route(channel), count)
            return
        link.claims[channel] = max(0, link.claims.get(channel, 0) + count)
        link.write([CLAIM, channel, count])

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
        return self.codec.decode(data)

    def _trim(self, channel: _Channel, now: float) -> None:
        """As the in-memory layer's, and the senders of expired messages are told."""
        messages = channel.messages
        expired = 0
        while messages and messages[0][0] <= now:
            _, data = messages.popleft()
            expired += 1
            if type(data) is _FromPeer:
                data.link.report_taken(channel.name)
        if expired:
            channel.stats.expired += expired
            self._book.totals.expired += expired

    def _put(self, channel: _Channel, deadline: float, data: bytes) -> None:
        """As the in-memory layer's; a named channel whose receivers wait in other processes
        (and not here) hands the message to one of them."""
        claimers = self._claimers and self._claimers.get(channel.name)
        if claimers and not any(not waiter.done() for waiter in channel.waiters):
            self._hand_over(channel.name, claimers, deadline, data)
            return
        super()._put(channel, deadline, data)

    def _hand_over(
        self, name: str, claimers: dict[Link, int], deadline: float, data: bytes
    ) -> None:
        """Give one message of named channel ``name`` to the first claimer (round robin)."""
        link = next(iter(claimers))
        count = claimers.pop(link)
        if count > 1:
            claimers[link] = count - 1  # to the back of the line
        if not claimers:
            del self._claimers[name]
        link.write([DELIVER, name, deadline, data])
        if type(data) is _FromPeer:
            data.link.report_taken(name)

    # -- frames from other processes ------------------------------------------------------------

    def _on_frame(self, link: Link, frame: Frame) -> None:
        if self._closed:
            return
        kind = frame[0]
        if kind == SEND:
            self._arrived(link, frame[1], frame[2], frame[3])
        elif kind == GROUP:
            self._group_arrived(link, frame[1], frame[2], frame[3], frame[4])
        elif kind == TAKEN:
            self._taken(link, frame[1], frame[2])
        elif kind == DROPPED:
            self._dropped(link, frame[1], frame[2], frame[3])
        elif kind == CLAIM:
            self._claimed(link, frame[1], frame[2])
        elif kind == DELIVER:
            name = frame[1]
            link.claims[name] = max(0, link.claims.get(name, 0) - 1)
            super()._put(self._channel(name), frame[2], frame[3])
        elif kind == HELLO:
            link.peer = frame[1]

    def _arrived(self, link: Link, name: str, deadline: float, data: bytes) -> None:
        """A message another process sent to a channel of this one."""
        target = self._channel(name)
        if len(target.messages) >= target.capacity:
            self._trim(target, self._clock())
            if len(target.messages) >= target.capacity:
                link.write([DROPPED, None, name, 1])
                return
        tagged = _FromPeer(data)
        tagged.link = link
        self._put(target, deadline, tagged)

    def _group_arrived(
        self, link: Link, group: str, names: list[str], deadline: float, data: bytes
    ) -> None:
        """A group message another process sent for these channels of this one."""
        now = self._clock()
        for name in names:
            target = self._channel(name)
            if len(target.messages) >= target.capacity:
                self._trim(target, now)
                if len(target.messages) >= target.capacity:
                    link.write([DROPPED, group, name, 1])
                    continue
            self._put(target, deadline, data)

    def _taken(self, link: Link, name: str, count: int) -> None:
        left = link.inflight.get(name, 0) - count
        if left > 0:
            link.inflight[name] = left
        else:
            link.inflight.pop(name, None)

    def _dropped(self, link: Link, group: str | None, name: str, count: int) -> None:
        """The receiving process found ``name`` full: count it here, where it was sent."""
        book = self._book
        book.totals.dropped += count
        book.channel(name).dropped += count
        capacity = self.get_capacity(name)
        if group is None:
            self._taken(link, name, count)
            self._drops.full(name, capacity)
        else:
            stats = book.group(group)
            stats.dropped += count
            stats.delivered -= count
            book.totals.sent -= count
            self._drops.dropped(group, name, capacity)

    def _claimed(self, link: Link, name: str, count: int) -> None:
        """Receivers of another process wait (or stop waiting) on named channel ``name``."""
        claimers = self._claimers.get(name)
        if count < 0:
            if claimers is not None and link in claimers:
                left = claimers[link] + count
                if left > 0:
                    claimers[link] = left
                else:
                    del claimers[link]
                    if not claimers:
                        del self._claimers[name]
            return
        source = self._channels.get(name)
        if source is not None and source.messages:
            self._trim(source, self._clock())
            while count and source.messages:
                deadline, data = source.messages.popleft()
                link.write([DELIVER, name, deadline, data])
                if type(data) is _FromPeer:
                    data.link.report_taken(name)
                count -= 1
        if count:
            claimers = self._claimers.setdefault(name, {})
            claimers[link] = claimers.get(link, 0) + count

    # -- connections that end ---------------------------------------------------------------------

    def _on_lost(self, link: Link, error: BaseException | None) -> None:
        if self._closed:
            return
        self._incoming.discard(link)
        for name in [name for name, claimers in self._claimers.items() if link in claimers]:
            del self._claimers[name][link]
            if not self._claimers[name]:
                del self._claimers[name]
        token = link.peer
        if token is None or self._links.get(token) is not link:
            return
        del self._links[token]
        if not _peers.is_alive(self.directory, token):
            self._forget(token)
        self._lost_with(link, error)

    def _connection_failed(self, link: Link, error: OSError) -> None:
        link.lost = True
        token = link.peer
        assert token is not None
        if self._links.get(token) is link:
            del self._links[token]
        if not _peers.is_alive(self.directory, token):
            self._forget(token)
        else:
            logger.warning("ipc:// layer: cannot connect to process %s: %s", token, error)
        unsent, link.unsent = link.unsent, []
        for frame in unsent:
            if frame[0] == SEND:
                self._resend(frame, error)
            elif frame[0] == GROUP:
                for name in frame[2]:
                    self._book.unavailable(name, frame[1])
                    self._drops.unavailable("group_send", frame[1], error)
        self._lost_with(link, error, sent=False)

    def _resend(self, frame: Frame, error: BaseException) -> None:
        """A message that never left: to its named channel's new home, else counted."""
        name = frame[1]
        if "!" in name:
            self._book.unavailable(name, None)
            self._drops.unavailable("send", name, error)
            return
        token = self._route(name)  # forgotten routes: the home is looked up again
        if token is None:
            self._arrived_here(name, frame[2], frame[3])
        else:
            target = self._link(token)
            if target is None:
                self._resend(frame, error)  # that home died too: the next one
                return
            target.inflight[name] = target.inflight.get(name, 0) + 1
            target.write(frame)

    def _arrived_here(self, name: str, deadline: float, data: bytes) -> None:
        target = self._channel(name)
        if len(target.messages) >= target.capacity:
            self._trim(target, self._clock())
            if len(target.messages) >= target.capacity:
                self._book.totals.dropped += 1
                target.stats.dropped += 1
                self._drops.full(name, target.capacity)
                return
        self._put(target, deadline, data)

    def _lost_with(self, link: Link, error: BaseException | None, sent: bool = True) -> None:
        """What a connection that ended leaves: messages in the peer's memory (lost with
        it, and counted), and receives waiting here on its named channels (claimed anew)."""
        if sent:
            reason = error or ConnectionError("the process ended")
            for name, count in link.inflight.items():
                for _ in range(count):
                    self._book.unavailable(name, None)
                self._drops.unavailable("send", name, reason)
        link.inflight.clear()
        claims, link.claims = link.claims, {}
        for name, count in claims.items():
            source = self._channels.get(name)
            waiting = sum(not w.done() for w in source.waiters) if source is not None else 0
            if count and waiting:
                self._send_claim(name, self._route(name), min(count, waiting))

    def _forget(self, token: str) -> None:
        """Process ``token`` has ended: remove what it owned (any process may; idempotent)."""
        if self._state is not None:
            self._state.forget_process(token)
        _peers.remove_files(self.directory, token)
        self._routes.clear()
        self._group_routes.clear()

    def _look_for_the_dead(self) -> None:
        """Every second: remove what dead processes of the directory left."""
        self._probe = None
        if self._closed or self._loop is None:
            return
        try:
            for token in _peers.dead_tokens(self.directory):
                self._forget(token)
            self._probes += 1
            if self._probes % _EXPIRE_EVERY == 0 and self._state is not None:
                self._state.expire_members(self._clock())
        except Exception:
            logger.exception("ipc:// layer: looking for dead processes failed")
        self._probe = self._loop.call_later(_PROBE_INTERVAL, self._look_for_the_dead)

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
                    self._drops.unavailable("group_send", group, _GONE)
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
        if len(self._group_routes) >= _MAX_ROUTES:
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
        for link in [*self._links.values(), *self._incoming]:
            link.close()
        self._links.clear()
        self._incoming.clear()
        self._claimers.clear()
        if self._server_task is not None:
            server = await self._server_task
            server.close()
            self._server_task = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        for task in list(self._tasks):
            task.cancel()
        registration, self._registration = self._registration, None
        if registration is not None and self._state is not None:
            if registration.pid == os.getpid():
                self._state.forget_process(registration.token)
            self._state.close()
            self._state = None
        if registration is not None:
            registration.release()
        self._unbind()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} {str(self.directory)!r} capacity={self.capacity}{state}>"
