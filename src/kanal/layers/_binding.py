"""Which event loop a layer's state lives on, and how calls from other loops get there.

A backend's state (waiting receivers, timers, connections) belongs to one event loop, its
*home*. :class:`LoopBoundLayer` is the binding every such backend shares (memory, Redis):

* The first call binds the state to the caller's running loop (the backend's ``_bound``
  sets the state up there). A call from another running loop is forwarded home; a
  forwarded receive is cancel-safe (:func:`take_on_loop`).
* A home that no longer runs in this process (its ``asyncio.run`` returned, or the process
  forked since) is replaced by the next caller's loop.
* :meth:`~LoopBoundLayer.for_sync` is the explicit opt-in for synchronous code whose
  loops each live for one call (``async_to_sync(layer.group_send)(...)`` in a WSGI view or
  a Celery task, where asgiref makes a loop for every call): a layer that no live loop
  holds then goes to the process's shared background loop, and such calls are forwarded
  there instead of binding the layer to a loop that ends with the call.

Each public coroutine of a backend opens with the same two lines, the first of which is
the whole cost on the home loop (``get_running_loop`` and an identity check)::

    if asyncio.get_running_loop() is not self._loop and not self._claim():
        return await self._forward(lambda: self.send(channel, message))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

from kanal.exceptions import LayerClosed
from kanal.layers._background import adopt, background_loop, is_background_loop
from kanal.layers._base import BaseChannelLayer

__all__ = ["LoopBoundLayer", "live_loop", "take_on_loop"]

T = TypeVar("T")


class LoopBoundLayer(BaseChannelLayer):
    """A channel layer whose state lives on one event loop at a time (see the module)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_pid = os.getpid()
        # Held while binding: threads of several loops may find no home at once.
        self._binding = threading.Lock()
        self._binding_pid = os.getpid()
        self._for_sync = False

    def bound_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop this layer's state lives on, while it runs (in this process: a forked
        child starts afresh)."""
        return live_loop(self._loop, self._loop_pid)

    def for_sync(self) -> Self:
        """Use this layer from sync code whose event loops each live for one call.

        ``async_to_sync(layer.group_send)(...)`` in a thread with no event loop above it
        (a WSGI view, a Celery task, a script) runs on a loop asgiref makes for that call
        and closes after it. Without this, the layer would bind to each such loop in turn:
        connect, serve the one call, and let go of its connections as the loop ends. After
        ``for_sync()``, a layer that no running loop holds lives on the process's shared
        background loop (the one ``layer.sync`` uses), and those calls are forwarded there
        and share its connections.

        Call it once, where such a process starts (``wsgi.py``, the Celery app's module);
        not in an ASGI server, whose loop should be the layer's home. Returns the layer.
        """
        self._for_sync = True
        return self

    # -- for the backends ------------------------------------------------------------------

    def _bound(self, loop: asyncio.AbstractEventLoop) -> None:
        """Set the state up on its new home ``loop`` (run on that loop, under the lock).

        What lived on a previous home is gone: its loop no longer runs here.
        """

    def _claim(self) -> bool:
        """True if the caller's loop is (or has just become) the home: use the state here.

        False: forward the call (:meth:`_forward`, :meth:`_take_home`).
        """
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return True
        if self.bound_loop() is not None:
            return False
        if self._for_sync and not is_background_loop(loop):
            return False
        self._bind(loop)
        return self._loop is loop

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._binding_pid != os.getpid():
            # A forked child: the lock may have been held by a thread that is not here.
            self._binding = threading.Lock()
            self._binding_pid = os.getpid()
        with self._binding:
            self._check_open()  # closed while this thread waited
            if self.bound_loop() is not None:
                return  # another thread bound it meanwhile
            self._bound(loop)
            # The loop last: a thread that sees the new home also sees its state.
            self._loop_pid = os.getpid()
            self._loop = loop

    def _destination(self) -> asyncio.AbstractEventLoop:
        """Where a call from another loop runs: the home; with :meth:`for_sync` and no
        home, the shared background loop; else (the home ended since the caller looked)
        the caller's own loop, which takes over."""
        home = self.bound_loop()
        if home is not None:
            return home
        if self._for_sync:
            adopt(self)
            return background_loop()
        return asyncio.get_running_loop()

    async def _forward(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call()``, one of the layer's public coroutines, where the state lives."""
        home = self._destination()
        if home is asyncio.get_running_loop():
            return await call()  # it claims the state here

        async def run() -> T:
            return await call()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), home))

    async def _take_home(
        self, take: Callable[[], Awaitable[T]], give_back: Callable[[T], None]
    ) -> T:
        """A receive's ``take()`` run where the state lives; cancelling the caller loses
        nothing (see :func:`take_on_loop`)."""
        home = self._destination()

        async def there() -> T:
            if not self._claim():  # the home moved meanwhile (it had ended)
                return await self._take_home(take, give_back)
            return await take()

        if home is asyncio.get_running_loop():
            return await there()
        return await take_on_loop(home, there, give_back)

    def _unbind(self) -> None:
        """Let go of the home (the layer is closed): nothing is forwarded there again."""
        self._loop = None


def live_loop(loop: asyncio.AbstractEventLoop | None, pid: int) -> asyncio.AbstractEventLoop | None:
    """``loop`` if it runs now in this process, which bound it when its id was ``pid``.

    A forked child inherits its parent's loop objects, and one that ran at the fork still
    says it runs; but nothing runs it in the child, so a call forwarded there would wait
    forever. The child must start afresh instead.
    """
    if loop is None or pid != os.getpid() or not loop.is_running() or loop.is_closed():
        return None
    return loop


async def take_on_loop(
    home: asyncio.AbstractEventLoop,
    take: Callable[[], Awaitable[T]],
    give_back: Callable[[T], None],
) -> T:
    """Run ``take()`` on ``home`` for a caller on another loop; a cancelled caller loses nothing.

    For receives forwarded to the loop a layer's state lives on. Who owns what ``take``
    returned is settled once, through ``outcome``'s thread-safe state: either the caller
    gets it, or the caller was cancelled first and ``give_back(item)`` runs on ``home``.
    (``run_coroutine_threadsafe`` alone drops a result that arrives as the caller is
    cancelled: a lost message.)
    """
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

    async def run() -> None:
        try:
            item = await take()
        except Exception as exc:
            if outcome.set_running_or_notify_cancel():
                outcome.set_exception(exc)
            return
        except BaseException:
            # The home loop is going away (its tasks are being cancelled): the caller, who
            # was not cancelled, hears that the layer's loop ended rather than a cancel.
            if outcome.set_running_or_notify_cancel():
                outcome.set_exception(
                    LayerClosed("the event loop the channel layer runs on stopped")
                )
            raise
        if outcome.set_running_or_notify_cancel():
            outcome.set_result(item)
        else:
            give_back(item)

    running = asyncio.run_coroutine_threadsafe(run(), home)
    try:
        return await asyncio.wrap_future(outcome)
    except asyncio.CancelledError:
        if outcome.cancel():
            running.cancel()  # the waiting take is cancelled and takes nothing
        elif not outcome.cancelled() and outcome.exception(timeout=5) is None:
            # Ours already, but we are cancelled: back where it came from, in front.
            home.call_soon_threadsafe(give_back, outcome.result())
        raise
