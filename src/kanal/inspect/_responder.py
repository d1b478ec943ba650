"""How a process answers ``kanal inspect``: through the channel layer it uses.

Each ``kanal`` process on a shared layer (``kanal serve`` with ``$KANAL_LAYER``, ``kanal
worker``, ``kanal scheduler``, ``kanal mqtt``) keeps one channel of its own in the group
:data:`INSPECT_GROUP`. ``kanal inspect`` sends that group a request naming its reply
channel; each process answers with its summary (``process_summary`` of a snapshot taken
on its own loop). No process is polled unless someone inspects, so the cost of being
inspectable is one idle channel and one renewal of the membership now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from kanal.exceptions import KanalError
from kanal.inspect._report import INSPECT_GROUP, process_summary
from kanal.inspect._snapshot import ProcessSnapshot
from kanal.layers import BaseChannelLayer

__all__ = ["INSPECT_GROUP", "REPLY", "REQUEST", "Responder", "can_answer"]

logger = logging.getLogger("kanal.inspect")

#: ``{"type": REQUEST, "reply": channel, "round": n}``: answer on ``reply``.
REQUEST = "kanal.inspect.request"
#: ``{"type": REPLY, "round": n, "process": summary}``.
REPLY = "kanal.inspect.reply"


def can_answer(layer: BaseChannelLayer) -> bool:
    """Whether anyone but this process could ask through ``layer``: not if it is this
    process's own (``memory://``; a server on one answers on its metrics listener)."""
    return layer.shared_across_processes


class Responder:
    """Answers the inspect requests that reach ``layer`` with ``source()``'s snapshot."""

    def __init__(self, layer: BaseChannelLayer, source: Callable[[], ProcessSnapshot]) -> None:
        self.layer = layer
        self.source = source
        self.channel: str | None = None
        self.answered = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Join :data:`INSPECT_GROUP` and answer from now on, in tasks of this loop."""
        self.channel = await self.layer.new_channel("inspect")
        await self.layer.group_add(INSPECT_GROUP, self.channel)
        self._tasks = [
            asyncio.create_task(self._answer(self.channel), name="kanal-inspect"),
            asyncio.create_task(self._renew(self.channel), name="kanal-inspect-renew"),
        ]

    async def _answer(self, channel: str) -> None:
        while True:
            try:
                request = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except KanalError as exc:  # the layer closed, or its backend is away
                if self.layer.closed:
                    return
                logger.debug("inspect: cannot receive requests: %s", exc)
                await asyncio.sleep(1.0)  # the layer retries its backend; so do we, slowly
                continue
            reply = request.get("reply")
            if request.get("type") != REQUEST or not isinstance(reply, str):
                logger.warning("inspect: ignored a malformed request: %r", request)
                continue
            answer = {
                "type": REPLY,
                "round": request.get("round"),
                "process": process_summary(self.source()),
            }
            try:
                await self.layer.send(reply, answer)
            except KanalError as exc:  # the inspector left, its channel is full...
                logger.debug("inspect: could not answer on %s: %s", reply, exc)
                continue
            self.answered += 1

    async def _renew(self, channel: str) -> None:
        # Memberships lapse after group_expiry unless renewed; a third of it leaves room
        # for a renewal or two to fail while the backend is away.
        period = self.layer.group_expiry / 3
        while True:
            await asyncio.sleep(period)
            try:
                await self.layer.group_add(INSPECT_GROUP, channel)
            except KanalError as exc:
                logger.debug("inspect: could not renew the membership: %s", exc)

    async def close(self) -> None:
        """Stop answering and leave the group (best effort: the layer may be gone)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        channel, self.channel = self.channel, None
        if channel is not None and not self.layer.closed:
            with contextlib.suppress(KanalError):
                await self.layer.group_discard(INSPECT_GROUP, channel)
