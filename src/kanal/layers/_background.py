"""The process's shared background event loop, for layer calls that have no loop to run on.

Sync code (``layer.sync``, or ``async_to_sync`` in a process that runs no loop of its own)
has no event loop that outlives its call. Such calls run here instead: one loop in one
daemon thread for the whole process, so a layer keeps one set of connections for the life
of the process instead of opening new ones per call.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import weakref
from typing import Protocol

__all__ = ["adopt", "background_loop", "is_background_loop"]


class _Layer(Protocol):
    def bound_loop(self) -> asyncio.AbstractEventLoop | None: ...

    async def close(self) -> None: ...


class _LoopThread:
    """One event loop in one daemon thread (a new one after a fork: threads do not fork)."""

    _instance: _LoopThread | None = None
    _lock = threading.Lock()
    #: Layers that live on the shared loop, closed there when the process exits.
    _layers: weakref.WeakSet[_Layer] = weakref.WeakSet()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kanal-sync-layer", daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
                atexit.register(cls._instance.stop)
            return cls._instance.loop

    def stop(self) -> None:
        """Close the layers living here, end the loop's tasks, stop the loop and close it (at
        interpreter exit), so that no connection is left unclosed and no task pending."""
        if self.loop.is_running():
            done = asyncio.run_coroutine_threadsafe(self._shut_down(), self.loop)
            with contextlib.suppress(Exception):
                done.result(timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
        if not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()

    async def _shut_down(self) -> None:
        for layer in list(self._layers):
            if layer.bound_loop() is self.loop:
                with contextlib.suppress(Exception):
                    await layer.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared background loop, started on first use (and anew in a forked child)."""
    return _LoopThread.get()


def adopt(layer: _Layer) -> None:
    """Close ``layer`` on the shared loop when the process exits (if it lives there then)."""
    _LoopThread._layers.add(layer)


def is_background_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """True if ``loop`` is the shared background loop (without starting it)."""
    instance = _LoopThread._instance
    return instance is not None and loop is instance.loop
