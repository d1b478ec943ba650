"""Signal handlers for kanal's processes: SIGTERM and SIGINT ask a process to stop.

``kanal serve`` (each server process and the supervisor of ``--workers``), ``kanal worker``
and ``kanal scheduler`` all stop gracefully on SIGTERM (what process managers send) and
SIGINT (Ctrl-C); :func:`handling_signals` is the one place that installs such handlers.

This module sits at the top of the package and imports nothing from kanal because both
``kanal.server`` (which may import only ``kanal.protocols``) and ``kanal.worker`` (which
imports ``layers``, ``consumers`` and ``routing``) use it, and neither may import the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator
from types import FrameType

__all__ = ["STOP_SIGNALS", "handling_signals"]

#: The signals that ask a kanal process to stop gracefully.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# What signal.getsignal() returns: a Python handler, SIG_DFL/SIG_IGN, or None (set from C).
_Previous = Callable[[int, FrameType | None], object] | int | None


@contextlib.contextmanager
def handling_signals(
    handler: Callable[[signal.Signals], object],
    signals: Iterable[signal.Signals] = STOP_SIGNALS,
) -> Iterator[None]:
    """While the block runs, each of ``signals`` calls ``handler(signal)``.

    In a running event loop the handler runs as a callback of the loop (so it may set an
    ``asyncio.Event``); outside one it runs as a plain Python signal handler. Where signals
    cannot be handled (a thread other than the main one, as when a test runs a server in a
    thread), nothing is installed and the block runs all the same.

    When the block ends the handlers from before come back, so the extent of the block says
    what a second signal does. ``Server.serve`` ends it when its drain begins: a second
    signal then stops the process at once (SIGINT: ``KeyboardInterrupt`` or asyncio's
    cancellation of the main task; SIGTERM: the default action). A worker's ``serve`` keeps
    it through the drain, which its own timeout bounds: a second signal changes nothing.
    Not meant to be nested for one signal.
    """
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    installed: list[tuple[signal.Signals, _Previous]] = []
    for sig in signals:
        previous = signal.getsignal(sig)
        try:
            if loop is not None:
                loop.add_signal_handler(sig, handler, sig)
            else:
                signal.signal(sig, lambda signum, _frame: handler(signal.Signals(signum)))
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread, or no signals on this platform
        installed.append((sig, previous))
    try:
        yield
    finally:
        for sig, previous in reversed(installed):
            if loop is not None:
                loop.remove_signal_handler(sig)
            if previous is not None:  # None: a handler not set from Python, left as it is
                signal.signal(sig, previous)
