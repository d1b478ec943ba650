"""Sync handlers off the event loop: the one thread pool they run in, and hooks around each call.

Every sync handler kanal calls from async code (a :class:`~kanal.consumers.SyncConsumer`'s
methods, a classic consumer function, a sync worker service) goes through :func:`run_sync`.
Frameworks add what must happen around such a call in the thread that makes it:
``kanal.django`` adds Django's ``close_old_connections`` before and after, as Django's own
request cycle does, so that a handler that touches the ORM never keeps a stale or broken
database connection for the life of its thread.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, ParamSpec, TypeVar

from asgiref.sync import sync_to_async

from kanal.exceptions import ConfigError

__all__ = [
    "SyncHook",
    "add_sync_hooks",
    "remove_sync_hooks",
    "run_sync",
    "sync_executor",
    "with_sync_hooks",
]

P = ParamSpec("P")
R = TypeVar("R")

#: A function of no arguments run in the handler's thread, before or after the handler.
SyncHook = Callable[[], None]

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def sync_executor() -> ThreadPoolExecutor:
    """The thread pool that runs sync consumers' handlers (``$KANAL_SYNC_THREADS``, 64).

    Its own pool, not the event loop's default one (5 to 36 threads) nor asgiref's single
    thread-sensitive thread: a handler blocked on a slow query holds one thread, and the
    other connections' handlers keep running in the rest.
    """
    global _executor
    with _executor_lock:
        if _executor is None:
            raw = os.environ.get("KANAL_SYNC_THREADS") or "64"
            if not raw.isdigit() or int(raw) < 1:
                raise ConfigError(f"KANAL_SYNC_THREADS must be a positive integer, not {raw!r}")
            size = int(raw)
            _executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="kanal-sync")
        return _executor


class _Hooks(NamedTuple):
    key: str
    before: SyncHook | None
    after: SyncHook | None


# Replaced as a whole, never changed in place: a call reads it once, without a lock.
_hooks: tuple[_Hooks, ...] = ()
_hooks_lock = threading.Lock()


def add_sync_hooks(
    key: str, *, before: SyncHook | None = None, after: SyncHook | None = None
) -> None:
    """Run ``before`` and ``after`` in the thread of every sync handler call, around it.

    ``key`` names the pair: adding a key again replaces its pair (a Django app's ``ready()``
    may run more than once), so hooks are never doubled; adding the same pair again is
    cheap and changes nothing. ``before`` hooks run in the order
    they were added, ``after`` hooks in the reverse order; ``after`` runs whether the handler
    returned or raised. An exception from ``before`` stops the call (the handler does not
    run) and reaches the caller, as the handler's own would.
    """
    global _hooks
    if before is None and after is None:
        raise ValueError("add_sync_hooks() needs a before or an after hook")
    pair = _Hooks(key, before, after)
    if pair in _hooks:  # already there: no lock, no new tuple (callers may add per call)
        return
    with _hooks_lock:
        kept = tuple(hooks for hooks in _hooks if hooks.key != key)
        _hooks = (*kept, pair)


def remove_sync_hooks(key: str) -> bool:
    """Remove the hooks added under ``key``; ``False`` if there were none."""
    global _hooks
    with _hooks_lock:
        kept = tuple(hooks for hooks in _hooks if hooks.key != key)
        removed = len(kept) != len(_hooks)
        _hooks = kept
    return removed


def with_sync_hooks(function: Callable[P, R]) -> Callable[P, R]:
    """``function`` with the hooks around it, for code that runs it in a thread itself."""

    @functools.wraps(function)
    def hooked(*args: P.args, **kwargs: P.kwargs) -> R:
        hooks = _hooks
        if not hooks:
            return function(*args, **kwargs)
        ran: list[_Hooks] = []
        try:
            for pair in hooks:
                if pair.before is not None:
                    pair.before()
                ran.append(pair)
            return function(*args, **kwargs)
        finally:
            # Only the pairs whose before hook ran: the others have nothing to undo.
            for pair in reversed(ran):
                if pair.after is not None:
                    pair.after()

    return hooked


async def run_sync(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a sync handler in :func:`sync_executor`, with the hooks around it; its result.

    The context (``contextvars``) is the caller's, as with asgiref's ``sync_to_async``, and
    a sync function the handler calls back through ``async_to_sync`` runs on the caller's
    event loop.
    """
    hooked = with_sync_hooks(function)
    call = sync_to_async(hooked, thread_sensitive=False, executor=sync_executor())
    return await call(*args, **kwargs)
