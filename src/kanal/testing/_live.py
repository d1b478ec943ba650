"""A real kanal server for tests: an application on a free loopback port."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from kanal.typing import ASGIApp

__all__ = ["LiveServer"]


class LiveServer:
    """Runs ``app`` with :class:`kanal.server.Server` on ``127.0.0.1`` and a free port.

    ::

        async with LiveServer(application) as server:
            async with websockets.connect(server.ws_url + "/ws/chat/lobby/") as ws:
                ...

    ``options`` are :class:`kanal.server.Config` fields (``root_path``, ``ws_ping_interval``...).
    ``port`` 0 (the default) picks a free port; give a stopped server's port to restart it.
    The server runs in the caller's event loop, so an in-memory channel layer used by the
    test is the one the application sees.
    """

    def __init__(
        self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, **options: Any
    ) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.options = options
        self._server: Any = None

    async def start(self) -> LiveServer:
        """Start listening; returns once connections are accepted."""
        # Imported here: the server imports the protocol stack, which tests of the
        # framework alone never need.
        from kanal.server import Config, Server

        options = {"ws_ping_interval": None, "timeout_graceful_shutdown": 2.0, **self.options}
        # The server types messages as MutableMapping, the framework as dict: both are ASGI.
        app: Any = self.app
        self._server = Server(Config(app=app, host=self.host, port=self.requested_port, **options))
        await self._server.start()
        return self

    async def stop(self) -> None:
        """Drain and stop the server (idempotent)."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("the live server is not running")
        port: int = self._server.port
        return port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>`` (no trailing slash)."""
        return f"ws://{self.host}:{self.port}"

    async def __aenter__(self) -> LiveServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
