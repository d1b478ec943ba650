"""The ASGI lifespan protocol: startup before listening, shutdown after draining."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from kanal.exceptions import LifespanError
from kanal.server._state import ASGI_INFO, logger
from kanal.typing import ASGIApp

__all__ = ["Lifespan"]


class Lifespan:
    """Runs the app once with a ``lifespan`` scope for the life of the server.

    In ``"auto"`` mode an app that raises before answering ``startup`` is taken not to
    support lifespan (as Django's ASGI handler does): the server logs it and carries on.
    """

    def __init__(self, app: ASGIApp, mode: Literal["auto", "on", "off"], state: dict[str, Any]):
        self.app = app
        self.mode = mode
        self.state = state
        self.supported = mode != "off"
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._failure: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer; raise ``LifespanError`` on failure."""
        if not self.supported:
            return
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self._failure is not None:
            raise LifespanError(f"application startup failed: {self._failure}")

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the answer (or the app's end)."""
        if not self.supported or self._task is None:
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._shutdown_done.wait()
        if self._failure is not None:
            logger.error("application shutdown failed: %s", self._failure)
        await self._task

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_INFO, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:
            if not self._startup_done.is_set() and self.mode == "auto":
                self.supported = False
                logger.info("the application does not support lifespan (%s); continuing", exc)
            else:
                self._failure = self._failure or repr(exc)
                logger.error("lifespan error", exc_info=exc)
        finally:
            self._startup_done.set()
            self._shutdown_done.set()

    async def _receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    async def _send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._startup_done.set()
        elif kind == "lifespan.startup.failed":
            self._failure = message.get("message", "") or "lifespan.startup.failed"
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            self._failure = message.get("message", "") or "lifespan.shutdown.failed"
            self._shutdown_done.set()
        else:
            raise LifespanError(f"unexpected lifespan message type {kind!r}")
