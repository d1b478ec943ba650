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
* Without the opt-in, the layer opts in by itself once it has seen such a loop: when its
  home was a loop run on a thread other than the main one and has been closed since
  (asgiref runs each such call as ``asyncio.run`` in an executor thread, and that closes
  the loop before the call returns), and the next caller is not on the main thread either.
  Loops run one after another on the main thread (``asyncio.run`` twice, a test runner's
  loop per test) rebind as before. Nothing here reads stack frames or asgiref.

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

# Seconds between looks at a home loop that has not yet run a forwarded call (see _forward).
_HOME_CHECK = 0.25


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
        # The thread that ran the home loop: see _home_was_a_one_call_loop.
        self._loop_thread: threading.Thread | None = None

    def bound_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop this layer's state lives on, while it runs (in this process: a forked
        child starts afresh)."""
        return live_loop(self._loop, self._loop_pid)

    def for_sync(self) -> Self:
        """Use this layer from sync code whose event loops each live for one call.

        ``async_to_sync(layer.group_send)(...)`` in a thread with no event loop above it
        (a WSGI view, a Celery task, a script) runs on a loop asgiref makes for that call
        and closes after it. After ``for_sync()``, a layer that no running loop holds lives
        on the process's shared background loop (the one ``layer.sync`` uses), and those
        calls are forwarded there and share its connections.

        Without it the layer opts in by itself, but only after one such call: that first
        call binds the layer to asgiref's loop (connecting anew), and the layer switches
        when the next call finds that loop closed (see the module). Calling it up front
        saves that first binding; and calls made from several threads while the layer is
        on that first loop (a threaded WSGI server's first requests) are forwarded there,
        and may fail as it ends.

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
        if not self._for_sync and self._home_was_a_one_call_loop():
            self._for_sync = True  # sync code whose loops each live for one call: see module
        if self._for_sync and not is_background_loop(loop):
            return False
        self._bind(loop)
        return self._loop is loop

    def _home_was_a_one_call_loop(self) -> bool:
        """The last home (in this process) ran on a thread other than the main one and is
        closed now; and the caller is not on the main thread either."""
        main = threading.main_thread()
        return (
            self._loop is not None
            and self._loop.is_closed()
            and self._loop_pid == os.getpid()
            and self._loop_thread is not main
            and threading.current_thread() is not main
        )

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
            self._loop_thread = threading.current_thread()
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
        """Run ``call()``, one of the layer's public coroutines, where the state lives.

        The home may end while the call waits to run there (asgiref closes a one-call loop
        as its own call returns, while other threads' calls are queued on it): a call that
        never started is run again where the layer lives then, as nothing of it happened;
        one that had started raises :class:`LayerClosed` (it may have taken effect, so it
        is not repeated).
        """
        while True:
            home = self._destination()
            if home is asyncio.get_running_loop():
                return await call()  # it claims the state here
            started = False

            async def run() -> T:
                nonlocal started
                started = True
                return await call()

            coroutine = run()
            future = asyncio.run_coroutine_threadsafe(coroutine, home)
            outcome = asyncio.wrap_future(future)
            try:
                while not outcome.done():
                    # A loop that stops before it runs the queued call never answers:
                    # look at it now and then, while waiting.
                    await asyncio.wait([outcome], timeout=_HOME_CHECK)
                    if not outcome.done() and not started and not home.is_running():
                        # Cancelling tells the home loop too, which fails once it is closed.
                        if not home.is_closed():
                            future.cancel()
                        coroutine.close()  # it never ran, and no loop will run it now
                        break
            except asyncio.CancelledError:
                future.cancel()
                raise
            if outcome.done() and not outcome.cancelled():
                return outcome.result()
            if started:
                raise LayerClosed(
                    "the event loop the channel layer runs on stopped during this call"
                )

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
