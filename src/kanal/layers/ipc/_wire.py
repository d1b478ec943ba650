"""The connections between the processes of an ``ipc://`` layer.

A process that sends to another connects once to its Unix socket and keeps the connection;
the answers of the receiving side (how many of its messages left a channel, drops, messages
of a named channel it claimed) come back on the same connection. A connection is a stream
of msgpack arrays, ``[kind, ...]``, which msgpack's streaming unpacker splits by itself;
the first frame of a loop round is written at once and the rest of the round's together,
at its end. Reads go into one buffer per thread (``asyncio.BufferedProtocol``): with a
plain ``Protocol``, asyncio allocates a fresh 256 KiB ``bytes`` for every read, which glibc
serves by ``mmap``, ``mremap`` and ``munmap`` in a process that has not yet freed a block
that large (three system calls and a page fault for every message a receiving process
wakes up for).

The frames (``channel`` and ``group`` are names, ``data`` the codec's bytes):

========  =========================================  ===========================================
kind      fields                                     meaning
========  =========================================  ===========================================
HELLO     token                                      first frame: the connecting process
SEND      channel, deadline, data                    a message for a channel of the receiver
GROUP     group, [channel...], deadline, data        a group message for these of its channels
TAKEN     channel, n                                 n of your messages left that channel
DROPPED   group or None, channel, n                  n of your messages found it full
CLAIM     channel, n                                 n more (or fewer) receivers here wait on
                                                     named ``channel``, whose home you are
DELIVER   channel, deadline, data                    a message of a named channel you claimed
========  =========================================  ===========================================
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Final, cast

import msgpack

__all__ = ["CLAIM", "DELIVER", "DROPPED", "GROUP", "HELLO", "SEND", "TAKEN", "Link"]

logger = logging.getLogger("kanal.layers")

HELLO: Final = 0
SEND: Final = 1
GROUP: Final = 2
TAKEN: Final = 3
DROPPED: Final = 4
CLAIM: Final = 5
DELIVER: Final = 6

# Frames larger than a message can be are refused (a peer that is not a kanal layer).
_MAX_FRAME = 256 * 1024 * 1024
# Bytes one read may take: asyncio's own read size for sockets, so that a burst is read in
# as few system calls as before.
_READ_SIZE = 256 * 1024

Frame = list[Any]


_buffers = threading.local()


def _read_buffer() -> memoryview:
    """The read buffer of this thread's connections, one for all of them: a read is
    get_buffer, recv_into and buffer_updated in one go on the loop's thread, and the bytes
    are copied out before the next, so that each connection holds no 256 KiB of its own
    (uvloop reads plain protocols through one shared buffer the same way)."""
    buffer: memoryview | None = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = memoryview(bytearray(_READ_SIZE))
    return buffer


class Link(asyncio.BufferedProtocol):
    """One connection to another process, in either direction.

    ``on_frame(link, frame)`` is called for each frame received, ``on_lost(link, error)``
    once when the connection ends. Frames written before the connection is made wait in
    :attr:`unsent` (the layer re-routes or counts them if it never is).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        peer: str | None,
        on_frame: Callable[[Link, Frame], None],
        on_lost: Callable[[Link, BaseException | None], None],
    ) -> None:
        self.loop = loop
        self.peer = peer  # the other process's token; None until its HELLO (incoming)
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.unsent: list[Frame] = []
        self.lost = False
        self._out: list[bytes] = []
        self._gathered = 0  # bytes in _out
        self._flush_scheduled = False
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=_MAX_FRAME)
        self._packer = msgpack.Packer(use_bin_type=True)
        # Sender side: messages sent to each channel of the peer that it has not reported
        # taken yet (what ChannelFull is decided on).
        self.inflight: dict[str, int] = {}
        # Receiver side: counts to report back, gathered per loop round.
        self.taken: dict[str, int] = {}
        # Claimer side: receivers of this process waiting on each named channel homed there.
        self.claims: dict[str, int] = {}

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance: uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        unsent, self.unsent = self.unsent, []
        for frame in unsent:
            self.write(frame)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        unpacker = self._unpacker
        try:
            # Copied into the unpacker's own buffer: the read buffer is free again after.
            unpacker.feed(_read_buffer()[:nbytes])
        except msgpack.BufferFull:
            logger.warning("ipc:// layer: closing a connection that sent an oversized frame")
            if self.transport is not None:
                self.transport.abort()
            return
        try:
            for frame in unpacker:
                self.on_frame(self, frame)
        except (msgpack.UnpackException, ValueError, TypeError, IndexError) as exc:
            logger.warning("ipc:// layer: closing a connection that sent a bad frame: %s", exc)
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            self.on_lost(self, exc)

    # -- writing -----------------------------------------------------------------------------

    def write(self, frame: Frame) -> None:
        """Write ``frame``: the first of a loop round at once, the others of the round
        gathered into one socket write at its end."""
        if self.transport is None:
            if not self.lost:
                self.unsent.append(frame)
            return
        if not self._flush_scheduled:
            # The first frame of a loop round goes out at once (a lone message is not
            # delayed to the end of the round); the rest of the round's are gathered.
            # The flush is scheduled after the write: its cost is not the message's.
            self._flush_scheduled = True
            if not self._out and not self.transport.is_closing():
                try:
                    self.transport.write(self._packer.pack(frame))
                finally:
                    self.loop.call_soon(self._flush)
                return
            self.loop.call_soon(self._flush)
        packed = self._packer.pack(frame)
        self._gathered += len(packed)
        self._out.append(packed)

    def backlogged(self, limit: int) -> bool:
        """True if more than ``limit`` bytes wait to be written: the other process is not
        reading (stopped, or far behind). Senders count drops then instead of holding
        without bound."""
        transport = self.transport
        if transport is None:
            return False
        return self._gathered + transport.get_write_buffer_size() > limit

    def report_taken(self, channel: str) -> None:
        """One message this peer sent to ``channel`` left it (reported once per round)."""
        taken = self.taken
        if not taken and not self._flush_scheduled and self.transport is not None:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        taken[channel] = taken.get(channel, 0) + 1

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.taken:
            taken, self.taken = self.taken, {}
            for channel, count in taken.items():
                self._out.append(self._packer.pack([TAKEN, channel, count]))
        if not self._out or self.transport is None or self.transport.is_closing():
            self._out.clear()
            self._gathered = 0
            return
        out, self._out = self._out, []
        self._gathered = 0
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        """Close the connection (frames not yet written are flushed first)."""
        self._flush()
        if self.transport is not None:
            self.transport.close()
        self.lost = True
