"""Tasks of kanal's own machinery, started detached from whoever happened to start them.

A task copies the context of the code that creates it. A layer's drain, a connection
pool's batch or probe, a heartbeat is started lazily by the first call that needs it, often
from inside a connection's application, and would then carry that connection's context
(its id in the logs, ``kanal._logging.CONNECTION``) for its whole life, stamping that id
on lines that are about no connection. These start in an empty context instead.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["detached_task"]

T = TypeVar("T")


def detached_task(
    coroutine: Coroutine[Any, Any, T],
    *,
    name: str | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> asyncio.Task[T]:
    """``coroutine`` as a task of ``loop`` (the running one by default), in a new, empty
    context."""
    target = loop if loop is not None else asyncio.get_running_loop()
    return target.create_task(coroutine, name=name, context=contextvars.Context())
