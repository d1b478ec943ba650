"""The run of a process that serves the layer until stopped: start, serve, drain, return.

:class:`Worker` and :class:`Scheduler` (and the bridge's worker side) differ in what they
start and what they finish or hand back when they stop; :class:`Lifecycle` holds what they
share: one run, a stop that is safe to ask for at any time and more than once, a drain after
the work is stopped, the first error raised at the end, and SIGTERM/SIGINT handling in
:meth:`Lifecycle.serve`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

from kanal._signals import handling_signals
from kanal.exceptions import LayerClosed
from kanal.layers import BaseChannelLayer, get_channel_layer

__all__ = ["Lifecycle", "Stoppable", "serve_until_signalled"]

logger = logging.getLogger("kanal.worker")


class Stoppable(Protocol):
    """What :func:`serve_until_signalled` runs: ``run()`` until ``stop()`` is called."""

    async def run(self) -> None:
        """Serve until :meth:`stop`, then drain and return."""

    def stop(self) -> None:
        """Ask :meth:`run` to drain and return."""


async def serve_until_signalled(service: Stoppable) -> None:
    """``service.run()``, with SIGTERM and SIGINT calling ``service.stop()`` until it returns.

    The handlers stay through the drain: a second signal changes nothing, the drain is
    bounded by the service's own timeout.
    """
    name = type(service).__name__

    def on_signal(sig: signal.Signals) -> None:
        logger.info("%s got %s: finishing what it holds, then exiting", name, sig.name)
        service.stop()

    with handling_signals(on_signal):
        await service.run()


class Lifecycle:
    """Start, serve until :meth:`stop` or a failure, then drain: one :meth:`run`.

    A subclass says what to do in two methods:

    - :meth:`_start` starts the work on the layer and returns the tasks that run until they
      are cancelled; one that ends by itself has failed (or has nothing left to do), which
      stops the whole like :meth:`stop`;
    - :meth:`_drain` finishes or hands back what is held, once those tasks are cancelled.

    Work that is not such a task reports a failure with :meth:`_fail`. :meth:`run` raises
    the first failure after the drain: the one given to :meth:`_fail`, else the first error
    of a task (a layer closed under it is not one).
    """

    def __init__(self, layer: BaseChannelLayer | None) -> None:
        #: The channel layer; ``get_channel_layer()`` at :meth:`run` unless one was given.
        self.layer = layer
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        self._ran = False
        self._error: BaseException | None = None

    async def started(self) -> None:
        """Wait until :meth:`run` has started the work."""
        await self._started.wait()

    def stop(self) -> None:
        """Ask :meth:`run` to drain and return (safe more than once, and before :meth:`run`)."""
        self._stopping.set()

    async def serve(self) -> None:
        """:meth:`run`, with SIGTERM and SIGINT calling :meth:`stop` (see
        :func:`serve_until_signalled`)."""
        await serve_until_signalled(self)

    async def run(self) -> None:
        """Start, serve until :meth:`stop` (or a failure), drain; raise the failure if any."""
        if self._ran:
            raise RuntimeError(f"this {type(self).__name__} has run already; make a new one")
        self._ran = True
        if self.layer is None:
            self.layer = get_channel_layer()
        layer = self.layer
        tasks = self._start(layer)
        self._started.set()
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*tasks, stopping]:
                task.cancel()
            results = await asyncio.gather(*tasks, stopping, return_exceptions=True)
        await self._drain(layer)
        if self._error is not None:
            raise self._error
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, (asyncio.CancelledError, LayerClosed)
            ):
                raise result

    def _fail(self, error: BaseException) -> None:
        """Stop because of ``error``, which :meth:`run` raises after the drain (the first)."""
        if self._error is None:
            self._error = error
        self._stopping.set()

    def _start(self, layer: BaseChannelLayer) -> list[asyncio.Task[None]]:
        """Start the work; return the tasks that run until cancelled."""
        raise NotImplementedError

    async def _drain(self, layer: BaseChannelLayer) -> None:
        """Finish or hand back what is held, after the tasks of :meth:`_start` are cancelled."""
