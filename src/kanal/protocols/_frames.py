"""Server-to-client WebSocket frames built once, to be written to many connections.

A broadcast written by the server itself (direct delivery, see ``docs/direct.md``) is
framed here once and the same bytes go to every subscriber. That is possible because a
server's frames are never masked (RFC 6455 §5.1), so a frame does not depend on the
connection it goes to. The one per-connection state a frame could touch is
permessage-deflate's compression context (RFC 7692): these frames are sent uncompressed
(RSV1 clear), which §6 allows on a connection that negotiated compression ("an endpoint
MAY send a message uncompressed"), and which leaves that connection's compressor, and so
its own later compressed frames, untouched.
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


def _frame(first: int, payload: bytes) -> bytes:
    size = len(payload)
    # §5.2: 7-bit length up to 125, else 126 and 16 bits, else 127 and 64 bits.
    if size < 126:
        return _SHORT.pack(first, size) + payload
    if size < 65536:
        return _MEDIUM.pack(first, 126, size) + payload
    return _LONG.pack(first, 127, size) + payload


def message_frame(data: str | bytes) -> bytes:
    """One unfragmented, unmasked, uncompressed frame: text for ``str``, binary for ``bytes``."""
    if type(data) is str:
        return _frame(_FIN_TEXT, data.encode())
    return _frame(_FIN_BINARY, data)  # type: ignore[arg-type]
