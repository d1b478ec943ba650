"""Server-to-client WebSocket frames, built here rather than by the ``websockets`` library.

A server's frames are never masked (RFC 6455 §5.1), so a frame depends only on its message:

* every message an application sends on a connection that did not negotiate compression is
  framed here (:class:`~kanal.protocols.WebSocketSession`): the same bytes the library
  would build, at a fraction of its calls per message;
* a broadcast written by the server itself (direct delivery, see ``docs/direct.md``) is
  framed here once and the same bytes go to every subscriber. The one per-connection state
  a frame could touch is permessage-deflate's compression context (RFC 7692): these frames
  are sent uncompressed (RSV1 clear), which §6 allows on a connection that negotiated
  compression ("an endpoint MAY send a message uncompressed"), and which leaves that
  connection's compressor, and so its own later compressed frames, untouched.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["message_frame"]

_FIN_TEXT: Final = 0x81  # FIN, opcode 1 (§5.2)
_FIN_BINARY: Final = 0x82  # FIN, opcode 2
_SHORT: Final = struct.Struct("!BB")
_MEDIUM: Final = struct.Struct("!BBH")
_LONG: Final = struct.Struct("!BBQ")


def message_frame(data: str | bytes) -> bytes:
    """One unfragmented, unmasked, uncompressed frame: text for ``str``, binary for ``bytes``."""
    # One function, no helper: this runs for every message the server sends.
    if type(data) is str:
        first = _FIN_TEXT
        payload: bytes = data.encode()
    elif isinstance(data, str):  # a str subclass (StrEnum, markupsafe.Markup): still text
        first = _FIN_TEXT
        payload = str(data).encode()
    else:
        first = _FIN_BINARY
        payload = data
    size = len(payload)
    # §5.2: 7-bit length up to 125, else 126 and 16 bits, else 127 and 64 bits.
    if size < 126:
        return _SHORT.pack(first, size) + payload
    if size < 65536:
        return _MEDIUM.pack(first, 126, size) + payload
    return _LONG.pack(first, 127, size) + payload
