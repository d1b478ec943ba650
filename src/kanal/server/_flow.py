"""Backpressure for one connection, both ways: when to stop reading, when ``send`` must wait.

One :class:`FlowControl` per connection, shared by HTTP and WebSocket (a WebSocket takes
over its HTTP connection's): uvicorn's ``protocols/http/flow_control.py`` is the model. The
transport calls ``pause_writing``/``resume_writing`` when the bytes buffered towards the
client cross ``write_buffer_limit``; the application's ``send`` then waits in
:meth:`FlowControl.drain`. Reading the socket is paused for one or more reasons at once and
resumes only when none is left, so that one budget coming back under its mark does not undo
another's pause. TCP then slows the client down: nothing more is read, so nothing more is
held.
"""

from __future__ import annotations

import asyncio
from typing import Final

from kanal.server._state import ServerStats

__all__ = ["PAUSE_APP", "PAUSE_HANDSHAKE", "PAUSE_PEER", "FlowControl"]

#: The application has not taken what was read: a request body or pipelined requests
#: waiting (HTTP), messages waiting for ``receive()`` (WebSocket).
PAUSE_APP: Final = 1
#: The client does not read what is written to it: reading its frames would only make more
#: to write (pongs, the close echo) and hold it here (WebSocket).
PAUSE_PEER: Final = 2
#: Data sent before the WebSocket handshake was answered passed ``ws_max_pending_bytes``.
PAUSE_HANDSHAKE: Final = 4


class FlowControl:
    """Read and write backpressure of one transport, counted in the server's stats."""

    __slots__ = (
        "_drain_waiter",
        "_loop",
        "_transport",
        "closed",
        "paused",
        "stats",
        "write_paused",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        stats: ServerStats,
        write_buffer_limit: int,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self.stats = stats
        # asyncio's low-water mark is a quarter of the high one: the app resumes once the
        # client took three quarters of the backlog, not at every byte it reads.
        transport.set_write_buffer_limits(high=write_buffer_limit)
        #: The PAUSE_* reasons reading is paused for, as bits; read it (a per-message check
        #: costs no call then), change it with :meth:`pause_reading`/:meth:`resume_reading`.
        self.paused = 0
        self.write_paused = False
        self.closed = False
        self._drain_waiter: asyncio.Future[None] | None = None

    # Reading

    @property
    def read_paused(self) -> bool:
        """True while the socket is not read, for whatever reason."""
        return self.paused != 0

    def paused_for(self, reason: int) -> bool:
        """True while reading is paused for ``reason`` (one of the ``PAUSE_*`` values)."""
        return self.paused & reason != 0

    def pause_reading(self, reason: int) -> bool:
        """Stop reading for ``reason``; True if it was not paused for it already."""
        paused = self.paused
        if paused & reason:
            return False
        self.paused = paused | reason
        stats = self.stats
        if reason == PAUSE_APP:
            stats.read_pauses_app += 1
        elif reason == PAUSE_PEER:
            stats.read_pauses_peer += 1
        else:
            stats.read_pauses_handshake += 1
        if not paused and not self.closed:
            self._transport.pause_reading()
        return True

    def resume_reading(self, reason: int) -> None:
        """Drop ``reason``; reading resumes when no other reason holds it paused."""
        paused = self.paused
        if paused & reason:
            paused &= ~reason
            self.paused = paused
            if not paused and not self.closed:
                self._transport.resume_reading()

    # Writing

    def pause_writing(self) -> None:
        """The transport's buffer passed its high-water mark (the client reads slowly)."""
        if not self.write_paused:
            self.write_paused = True
            self.stats.write_pauses += 1

    def resume_writing(self) -> None:
        """The buffer went under the low-water mark: wake the ``send`` waiting to drain."""
        self.write_paused = False
        self._wake()

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its limit (or the connection is gone)."""
        if self.write_paused and not self.closed:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self._loop.create_future()
            await waiter

    def connection_lost(self) -> None:
        """The transport is gone: nothing waits for it any more."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
