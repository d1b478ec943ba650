"""Database access from async code: Django's ORM in kanal's thread pool, connections kept fresh."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from kanal.consumers import add_sync_hooks, run_sync

__all__ = ["close_old_connections", "database_sync_to_async", "install_connection_hooks"]

P = ParamSpec("P")
R = TypeVar("R")

# The key of kanal.django's hooks in kanal.consumers' registry.
HOOKS_KEY = "kanal.django.close_old_connections"


def close_old_connections() -> None:
    """Close this thread's connections that are broken or older than ``CONN_MAX_AGE``.

    What Django does at the start and end of every request (``request_started`` and
    ``request_finished``). Code outside a request (a consumer, a worker) never gets those
    signals: without this call a thread keeps its connection for as long as it lives, however
    ``CONN_MAX_AGE`` is set, and a broken one (the database restarted) fails every query the
    thread makes from then on.
    """
    from django.conf import settings
    from django.db import close_old_connections as close

    # A process without settings has no connections to close (and Django would raise).
    if settings.configured:
        close()


def install_connection_hooks() -> None:
    """Close stale connections before and after every sync handler kanal runs in a thread.

    Sync consumers, classic consumers, sync services and :func:`database_sync_to_async` all
    run through :func:`kanal.consumers.run_sync`; this adds :func:`close_old_connections`
    around each of those calls, as Django's request cycle has it around each request (and
    Channels around each of its sync consumers' handlers). ``kanal.django``'s ``ready()``
    calls it; calling it again changes nothing.
    """
    add_sync_hooks(HOOKS_KEY, before=close_old_connections, after=close_old_connections)


def database_sync_to_async(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``await database_sync_to_async(get_user)(pk)``: run ORM code from async code.

    Channels' name and use (also as a decorator, on methods too). The function runs in
    kanal's sync pool (:func:`kanal.consumers.sync_executor`, ``$KANAL_SYNC_THREADS``
    threads), so a slow query holds up only its caller, and the number of database
    connections a process opens is bounded by that pool, not by the number of clients.
    Before and after the call, stale connections are closed as Django's request cycle closes
    them (:func:`install_connection_hooks`, which the first call makes sure of when
    ``kanal.django`` is not in ``INSTALLED_APPS``): with ``CONN_MAX_AGE = 0`` a connection
    lasts one call; with a positive age it is reused until it is that old.
    """

    @functools.wraps(func)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        # At the call, not at decoration (often at import time): nothing is installed in a
        # process that only imports the code.
        install_connection_hooks()
        return await run_sync(func, *args, **kwargs)

    return call
