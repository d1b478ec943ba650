"""Database access from async code: Django's ORM in kanal's thread pool, connections kept fresh."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async

from kanal.consumers import sync_executor

__all__ = ["close_old_connections", "database_sync_to_async"]

P = ParamSpec("P")
R = TypeVar("R")


def close_old_connections() -> None:
    """Close this thread's connections that are broken or older than ``CONN_MAX_AGE``.

    What Django does at the start and end of every request (``request_started`` and
    ``request_finished``). Code outside a request (a consumer, a worker) never gets those
    signals: without this call a thread keeps its connection for as long as it lives, however
    ``CONN_MAX_AGE`` is set, and a pool of threads holds one each, idle or not.
    """
    from django.db import close_old_connections as close

    close()


def database_sync_to_async(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``await database_sync_to_async(get_user)(pk)``: run ORM code from async code.

    Channels' name and use (also as a decorator). The function runs in kanal's sync pool
    (:func:`kanal.consumers.sync_executor`, ``$KANAL_SYNC_THREADS`` threads), so a slow query
    holds up only its caller, and the number of database connections a process opens is
    bounded by that pool, not by the number of clients. Before and after the call, stale
    connections are closed as Django's request cycle closes them: with ``CONN_MAX_AGE = 0``
    a connection lasts one call; with a positive age it is reused until it is that old.
    """

    @functools.wraps(func)
    def bracketed(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(bracketed, thread_sensitive=False, executor=sync_executor())
