"""Leases between bridge processes: each tells the others it shares connections with that it
is alive, and notices the ones that stopped saying so.

A server and a worker that share a connection each hold it with the other (its *peer*, named
by the peer's control channel). Every ``heartbeat`` seconds each process sends every peer one
``bridge.alive`` listing the connections it holds with that peer, whatever their number. A
peer not heard from for :data:`MISSED_BEATS` of *its* heartbeats (it says how often it beats)
is lost: :class:`Peers` hands its connections to ``on_lost``. A peer that is alive but no
longer lists a connection held with it for longer than a lease has forgotten it (the server
closed it, or gave it to another worker): ``on_forgotten``.

So a peer that dies is noticed at most ``(MISSED_BEATS + 1) * heartbeat`` seconds after its
last heartbeat (4 s with the default of 1 s): three beats missed, plus one period of the
check. A process whose event loop is blocked for that long looks dead too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from kanal.bridge._messages import MessageType, alive_message
from kanal.exceptions import LayerClosed
from kanal.layers import BaseChannelLayer

__all__ = ["DEFAULT_HEARTBEAT", "MISSED_BEATS", "Peers"]

logger = logging.getLogger("kanal.bridge")

# 1 s: a heartbeat per peer process per second costs nothing next to the connections'
# traffic, and keeps the time to notice a dead process to a few seconds.
DEFAULT_HEARTBEAT = 1.0

# Heartbeats a peer may miss before it is lost: one late beat (a busy loop, a slow layer
# round trip) is no reason to move its connections.
MISSED_BEATS = 3

#: ``on_lost(peer, conns)`` and ``on_forgotten(peer, conns)``.
PeerCallback = Callable[[str, list[str]], None]


class Peers:
    """This process's leases with the bridge processes it shares connections with.

    :meth:`hold` and :meth:`release` say which connections are shared with which peer; the
    heartbeats run while any connection is held, and stop when none is.
    """

    def __init__(
        self,
        layer: BaseChannelLayer,
        *,
        heartbeat: float = DEFAULT_HEARTBEAT,
        on_lost: PeerCallback,
        on_forgotten: PeerCallback | None = None,
        prefix: str = "bridgectl",
    ) -> None:
        self.layer = layer
        self.heartbeat = heartbeat
        self.channel = ""  # this process's control channel, once started
        self._on_lost = on_lost
        self._on_forgotten = on_forgotten
        self._prefix = prefix
        self._held: dict[str, dict[str, float]] = {}  # peer -> {conn: held since}
        self._heard: dict[str, tuple[float, float]] = {}  # peer -> (last heard, its period)
        self._tasks: list[asyncio.Task[None]] = []
        #: Peers found lost so far.
        self.lost = 0

    async def start(self) -> str:
        """Make the control channel (once); return it."""
        if not self.channel:
            self.channel = await self.layer.new_channel(self._prefix)
        return self.channel

    def hold(self, peer: str, conn: str) -> None:
        """``conn`` is shared with ``peer`` from now on (and ``peer`` counts as heard)."""
        if not peer:
            return
        self._held.setdefault(peer, {})[conn] = time.monotonic()
        self._heard.setdefault(peer, (time.monotonic(), self.heartbeat))
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._beat(), name="kanal-bridge-heartbeat"),
                asyncio.create_task(self._listen(), name="kanal-bridge-control"),
            ]

    def release(self, peer: str, conn: str) -> None:
        """``conn`` is no longer shared with ``peer``."""
        conns = self._held.get(peer)
        if conns is None:
            return
        conns.pop(conn, None)
        if not conns:
            del self._held[peer]
            self._heard.pop(peer, None)

    def holds(self, peer: str, conn: str) -> bool:
        """Whether ``conn`` is held with ``peer``."""
        return conn in self._held.get(peer, ())

    async def aclose(self) -> None:
        """Stop the heartbeats (the connections are not released)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _beat(self) -> None:
        try:
            while True:
                # An attachment counts as a heartbeat, so the first beat waits a period:
                # short HTTP requests under light load cost no heartbeat each.
                await asyncio.sleep(self.heartbeat)
                if not self._held:
                    return
                sends = [
                    self.layer.send(peer, alive_message(self.channel, self.heartbeat, list(conns)))
                    for peer, conns in self._held.items()
                ]
                # Concurrent sends share the layer's round trips; a peer that cannot be
                # reached (its channel full or gone) is judged by its own silence, not here.
                for result in await asyncio.gather(*sends, return_exceptions=True):
                    if isinstance(result, LayerClosed):
                        return
                    if isinstance(result, Exception):
                        logger.debug("bridge: a heartbeat was not sent: %r", result)
                self._expire(time.monotonic())
        finally:
            # Nothing is held: stop listening too; the next hold() starts both again.
            tasks, self._tasks = self._tasks, []
            for task in tasks:
                if task is not asyncio.current_task():
                    task.cancel()

    def _expire(self, now: float) -> None:
        for peer, (heard, every) in list(self._heard.items()):
            if now - heard <= MISSED_BEATS * every:
                continue
            conns = list(self._held.pop(peer, {}))
            del self._heard[peer]
            self.lost += 1
            logger.error(
                "bridge: %s has not been heard from for %.1f s; it is taken as dead, with "
                "%d connection(s)",
                peer,
                now - heard,
                len(conns),
            )
            self._on_lost(peer, conns)

    async def _listen(self) -> None:
        with contextlib.suppress(LayerClosed):
            while True:
                message = await self.layer.receive(self.channel)
                if message.get("type") != MessageType.ALIVE:
                    continue
                self._heard_from(message)

    def _heard_from(self, message: dict[str, object]) -> None:
        peer = str(message.get("sender", ""))
        held = self._held.get(peer)
        if held is None:
            return  # nothing shared with it (any more)
        now = time.monotonic()
        every = message.get("every")
        period = float(every) if isinstance(every, (int, float)) and every > 0 else self.heartbeat
        self._heard[peer] = (now, period)
        if self._on_forgotten is None:
            return
        listed = message.get("conns")
        theirs = set(listed) if isinstance(listed, list) else set()
        # A connection held for less than a lease may not be listed yet: its attachment and
        # this heartbeat crossed each other.
        lease = MISSED_BEATS * period
        forgotten = [c for c, since in held.items() if c not in theirs and now - since > lease]
        for conn in forgotten:
            del held[conn]
        if not held:
            del self._held[peer]
            self._heard.pop(peer, None)
        if forgotten:
            self._on_forgotten(peer, forgotten)
