"""How an ``ipc://`` process joins its directory and deals with the others.

:class:`PeeredLayer` is the in-memory layer of one process plus everything that connects
it to the other processes of the directory: joining it (a lock file, a listening socket,
the shared database), finding where a channel lives (:meth:`~PeeredLayer._route`), the
connections (``_wire.Link``), the frames that arrive on them, and what happens when a
process ends. :class:`~kanal.layers.ipc.IpcChannelLayer` builds the layer's API on it.

The channels of this process are the in-memory layer's, with three hooks: a message
another process sent carries its connection (:class:`_FromPeer`), so that the sender is
told when it leaves the channel (received, expired or handed on: what ``ChannelFull`` is
decided on over there); a named channel whose receivers wait in other processes hands
its messages to them (:meth:`~PeeredLayer._put`); and a group message decoded once for
several channels is copied for each receiver (:meth:`~PeeredLayer._open`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
from typing import Any

from kanal._tasks import detached_task
from kanal.layers._base import Message
from kanal.layers._codec import Decoded, MessageCodec
from kanal.layers._memory import InMemoryChannelLayer, _Channel
from kanal.layers.ipc._paths import layer_directory, make_private, private_directory
from kanal.layers.ipc._peers import (
    Registration,
    dead_tokens,
    is_alive,
    is_token,
    joining,
    live_tokens,
    remove_files,
    socket_path,
)
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

__all__ = ["GONE", "MAX_ROUTES", "PeeredLayer"]

logger = logging.getLogger("kanal.layers")

# Seconds between looks for dead processes: what a dead one owned is gone within about this
# (well within any expiry), for the cost of one directory listing per second.
_PROBE_INTERVAL = 1.0
# Looks between deletions of lapsed membership rows (reads skip them already).
_EXPIRE_EVERY = 30
#: Names (and groups) whose routes a process remembers; past it it starts afresh.
MAX_ROUTES = 10_000
#: Why a message for a process that has ended was not sent.
GONE = ConnectionError("the receiving process has ended")


class _FromPeer(bytes):
    """A message's bytes that another process sent: who to tell when it leaves the channel."""

    link: Link


class PeeredLayer(InMemoryChannelLayer):
    """The in-memory layer of this process, joined to the other processes of a directory."""

    def __init__(self, path: str | os.PathLike[str] | None = None, **options: Any) -> None:
        super().__init__(**options)
        if path is None:
            self.directory = layer_directory("default", "")
        else:
            self.directory = layer_directory("", os.fspath(path))
        self._registration: Registration | None = None
        self._state: SharedState | None = None
        self._listener: socket.socket | None = None
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
        # A codec of the user's may decode to types Decoded would not copy.
        self._decode_once = type(self.codec).decode is MessageCodec.decode

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
        self._server_task = detached_task(
            loop.create_unix_server(self._accepted, sock=listener), loop=loop
        )
        self._probe = loop.call_later(
            _PROBE_INTERVAL, self._look_for_the_dead, context=contextvars.Context()
        )

    def _join(self) -> None:
        """Take this process's place in the directory (a forked child takes its own)."""
        if self._registration is not None:
            self._registration.release()  # the parent's: a child only closes its copy
        private_directory(self.directory)
        with joining(self.directory):
            state = SharedState(self.directory)
            for token in dead_tokens(self.directory):
                state.forget_process(token)
                remove_files(self.directory, token)
            if not live_tokens(self.directory):
                state.wipe()  # nobody lives here: what is left is a dead run's
            self._registration = Registration(self.directory)
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
        task, self._server_task = self._server_task, None
        if task is not None and task.done() and not task.cancelled() and not task.exception():
            with contextlib.suppress(Exception):
                task.result().close()
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
            if token == self._client or not is_token(token):
                token = None
        else:
            token = self._home_of(channel)
        if len(routes) >= MAX_ROUTES:
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
            if is_alive(self.directory, home):
                return home
            self._forget(home)
        return None

    def _link(self, token: str) -> Link | None:
        """The connection to process ``token``, made on first use; ``None`` if it is dead
        (what it owned is forgotten then)."""
        link = self._links.get(token)
        if link is None:
            if not is_alive(self.directory, token):
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
        path = os.fspath(socket_path(self.directory, link.peer))
        try:
            await self._loop.create_unix_connection(lambda: link, path)
        except OSError as exc:
            self._connection_failed(link, exc)

    def _spawn(self, coroutine: Any) -> None:
        assert self._loop is not None
        task = detached_task(coroutine, loop=self._loop)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _open(self, data: Any) -> Message:
        """The message ``data`` holds: bytes to decode, or a group message decoded once for
        several channels of this process (:class:`Decoded`), copied for this receiver."""
        if type(data) is Decoded:
            return data.fresh()
        return self.codec.decode(data)

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
        channels = self._channels
        put = InMemoryChannelLayer._put  # members are process-specific channels, mostly
        shared: Any = data
        if len(names) > 1 and self._decode_once:
            # Decoded once here for all of them; each receiver gets a copy of its own.
            try:
                shared = Decoded(self.codec.decode(data))
            except Exception:  # undecodable, or too deep to copy: each decodes its own
                shared = data
        item = (deadline, shared)  # immutable: one for every member
        for name in names:
            target = channels.get(name) or self._channel(name)
            if len(target.messages) >= target.capacity:
                self._trim(target, now)
                if len(target.messages) >= target.capacity:
                    link.write([DROPPED, group, name, 1])
                    continue
            if "!" in name:
                # The in-memory layer's _put, its common case inlined (a member waiting):
                # this runs once per member of a fan-out.
                waiters = target.waiters
                while waiters:
                    waiter = waiters.popleft()
                    if not waiter.done():
                        waiter.set_result(item)
                        break
                else:
                    put(self, target, deadline, shared)
            else:
                self._put(target, deadline, data)  # bytes: it may go on to another process

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
        if not is_alive(self.directory, token):
            self._forget(token)
        self._lost_with(link, error)

    def _connection_failed(self, link: Link, error: OSError) -> None:
        link.lost = True
        token = link.peer
        assert token is not None
        if self._links.get(token) is link:
            del self._links[token]
        if not is_alive(self.directory, token):
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
        remove_files(self.directory, token)
        self._routes.clear()
        self._group_routes.clear()

    def _look_for_the_dead(self) -> None:
        """Every second: remove what dead processes of the directory left."""
        self._probe = None
        if self._closed or self._loop is None:
            return
        try:
            for token in dead_tokens(self.directory):
                self._forget(token)
            self._probes += 1
            if self._probes % _EXPIRE_EVERY == 0 and self._state is not None:
                self._state.expire_members(self._clock())
        except Exception:
            logger.exception("ipc:// layer: looking for dead processes failed")
        self._probe = self._loop.call_later(_PROBE_INTERVAL, self._look_for_the_dead)

    async def _leave(self) -> None:
        """Close every connection and the server, and leave the directory (on close)."""
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
