"""How a process answers ``kanal inspect``: through the channel layer it uses.

Each ``kanal`` process on a shared layer (``kanal serve`` with ``$KANAL_LAYER``, ``kanal
worker``, ``kanal scheduler``, ``kanal mqtt``) keeps one channel of its own in the group
:data:`INSPECT_GROUP`. ``kanal inspect`` sends that group a request naming its reply
channel; each process answers with its summary (``process_summary`` of a snapshot taken
on its own loop). No process is polled unless someone inspects, so the cost of being
inspectable is one idle channel (on Redis, the receiving loop that any receive starts) and
one renewal of the membership now and then.

Being inspectable must never cost the process anything else: the responder starts in the
background (a backend that is away delays nothing, and it joins once the backend answers),
a failure to answer is logged and the next request answered, and closing it waits at most
:data:`CLOSE_TIMEOUT` for the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from kanal._backoff import Backoff
from kanal._tasks import detached_task
from kanal.exceptions import KanalError
from kanal.inspect._report import INSPECT_GROUP, process_summary
from kanal.inspect._snapshot import ProcessSnapshot
from kanal.layers import BaseChannelLayer

__all__ = ["CLOSE_TIMEOUT", "INSPECT_GROUP", "REPLY", "REQUEST", "Responder", "can_answer"]

logger = logging.getLogger("kanal.inspect")

#: ``{"type": REQUEST, "reply": channel, "round": n}``: answer on ``reply``.
REQUEST = "kanal.inspect.request"
#: ``{"type": REPLY, "round": n, "process": summary}``.
REPLY = "kanal.inspect.reply"
#: Seconds :meth:`Responder.close` waits to leave the group (the membership expires anyway).
CLOSE_TIMEOUT = 1.0


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
        #: Requests taken and answers sent: left out of the summaries it sends, so that
        #: inspecting a process does not change the traffic it reports.
        self.requests = 0
        self.answered = 0
        #: Set once the process is in the group, answering.
        self.joined = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Join :data:`INSPECT_GROUP` (retrying while the backend is away) and answer from
        then on, in a task of the running loop."""
        self._task = detached_task(self._run(), name="kanal-inspect")

    async def _run(self) -> None:
        backoff = Backoff(0.5, 30.0, jitter=0.2)
        warned = False
        while self.channel is None:
            try:
                channel = await self.layer.new_channel("inspect")
                await self.layer.group_add(INSPECT_GROUP, channel)
            except KanalError as exc:
                if self.layer.closed:
                    return
                if not warned:  # once: the layer logs its own outage
                    logger.warning("kanal inspect cannot see this process yet: %s", exc)
                    warned = True
                await asyncio.sleep(backoff.next())
                continue
            self.channel = channel
        self.joined.set()
        renewal = detached_task(self._renew(self.channel), name="kanal-inspect-renew")
        try:
            await self._answer(self.channel)
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal

    async def _answer(self, channel: str) -> None:
        backoff = Backoff(0.5, 5.0)
        while True:
            try:
                request = await self.layer.receive(channel)
            except KanalError as exc:  # the layer closed, or its backend is away
                if self.layer.closed:
                    return
                logger.debug("inspect: cannot receive requests: %s", exc)
                await asyncio.sleep(backoff.next())  # the layer retries its backend too
                continue
            backoff.reset()
            self.requests += 1
            reply = request.get("reply")
            if request.get("type") != REQUEST or not isinstance(reply, str):
                logger.warning("inspect: ignored a malformed request: %r", request)
                continue
            try:
                answer = {
                    "type": REPLY,
                    "round": request.get("round"),
                    "process": self._summary(channel),
                }
                await self.layer.send(reply, answer)
            except KanalError as exc:  # the inspector left, its channel is full...
                logger.debug("inspect: could not answer on %s: %s", reply, exc)
                continue
            except Exception:  # a snapshot that failed must not end the answering
                logger.exception("inspect: could not answer a request")
                continue
            self.answered += 1

    def _summary(self, channel: str) -> dict[str, Any]:
        summary = process_summary(self.source())
        summary["layer_received"] = max(0, summary["layer_received"] - self.requests)
        summary["layer_sent"] = max(0, summary["layer_sent"] - self.answered)
        summary["busiest_channels"].pop(channel, None)
        summary["channels"] = max(0, summary["channels"] - 1)
        return summary

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
        """Stop answering and leave the group, waiting for the backend at most
        :data:`CLOSE_TIMEOUT` (the layer may be gone, or away)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # already logged where it could be; closing goes on
                logger.exception("inspect: the responder failed")
        channel, self.channel = self.channel, None
        if channel is not None and not self.layer.closed:
            with contextlib.suppress(KanalError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.layer.group_discard(INSPECT_GROUP, channel)
