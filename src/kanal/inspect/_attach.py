"""Where the commands start their :class:`Responder`: on the layer the process uses, if
another process could ask through it; never failing the process if it cannot."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from kanal.exceptions import KanalError
from kanal.inspect._responder import Responder, can_answer
from kanal.inspect._snapshot import ProcessSnapshot, take_snapshot
from kanal.layers import BaseChannelLayer, get_channel_layer

if TYPE_CHECKING:
    from kanal.server import Server

__all__ = ["attach", "attach_server"]

logger = logging.getLogger("kanal.inspect")

Closer = Callable[[], Awaitable[None]]


async def attach(layer: BaseChannelLayer, source: Callable[[], ProcessSnapshot]) -> Closer | None:
    """Answer ``kanal inspect`` on ``layer`` with ``source()``; what stops it, or None if
    ``layer`` is this process's own. Returns at once: the responder joins in the
    background, once the backend answers."""
    if not can_answer(layer):
        return None
    responder = Responder(layer, source)
    responder.start()
    return responder.close


async def attach_server(server: Server, process: str) -> Closer | None:
    """:func:`attach` for a server process, on the layer its application uses."""
    try:
        layer = get_channel_layer()
    except KanalError as exc:  # a layer URL that cannot be used: the application will say
        logger.debug("kanal inspect: no layer to answer on: %s", exc)
        return None
    return await attach(layer, lambda: take_snapshot(process, server=server))
