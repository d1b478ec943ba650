"""Drive an ASGI application without a server: queue events in, read events out."""

# The ``timeout=`` parameters are asgiref's and Django Channels' API, which tests written
# for Channels call; keeping them beats asking everyone to wrap calls in asyncio.timeout.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from kanal.typing import ASGIApp, Message, Scope

__all__ = ["ApplicationCommunicator", "HttpCommunicator", "WebsocketCommunicator"]

HeaderList = Iterable[tuple[bytes | str, bytes | str]]


def _headers(headers: HeaderList | None) -> list[tuple[bytes, bytes]]:
    def raw(value: bytes | str) -> bytes:
        return value.encode("latin-1") if isinstance(value, str) else bytes(value)

    return [(raw(name).lower(), raw(value)) for name, value in headers or ()]


class ApplicationCommunicator:
    """Runs one application instance for ``scope`` and talks to it through two queues.

    ``send_input`` is what the server would deliver to ``receive()``; ``receive_output``
    returns what the application passed to ``send()``. An exception in the application is
    raised again from whichever of these you call next, so a failing app fails the test.
    """

    def __init__(self, application: ASGIApp, scope: Scope) -> None:
        self.application = application
        self.scope = scope
        self.input_queue: asyncio.Queue[Message] = asyncio.Queue()
        self.output_queue: asyncio.Queue[Message] = asyncio.Queue()
        self.future: asyncio.Task[None] = asyncio.ensure_future(
            application(scope, self.input_queue.get, self.output_queue.put)
        )

    async def send_input(self, message: Message) -> None:
        """Deliver ``message`` to the application's ``receive()``."""
        if self.future.done():
            self.future.result()  # raises the application's exception, if any
        await self.input_queue.put(message)

    async def receive_output(self, timeout: float = 1) -> Message:
        """The next event the application sent; ``TimeoutError`` if none within ``timeout``.

        On a timeout the application is cancelled, as a stuck app would be by a server.
        """
        if self.future.done() and self.output_queue.empty():
            self.future.result()
            raise AssertionError(
                f"the application finished without sending anything more (scope {self.scope})"
            )
        getter = asyncio.ensure_future(self.output_queue.get())
        try:
            done, _ = await asyncio.wait(
                {getter, self.future}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not getter.done():
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getter
        if getter in done:
            return getter.result()
        if self.future in done:
            self.future.result()
            if not self.output_queue.empty():
                return self.output_queue.get_nowait()
            raise AssertionError("the application finished without sending anything more")
        await self._cancel()
        raise TimeoutError(f"no output from the application within {timeout} s")

    async def receive_nothing(self, timeout: float = 0.1, interval: float = 0.01) -> bool:
        """True if the application sends nothing for ``timeout`` seconds.

        Absence has no event to wait on, so this polls; keep ``timeout`` short.
        """
        if not self.output_queue.empty():
            return False
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            await asyncio.sleep(interval)
            if not self.output_queue.empty():
                return False
        return self.output_queue.empty()

    async def wait(self, timeout: float = 1) -> None:
        """Wait for the application to return (re-raising its exception)."""
        done, _ = await asyncio.wait({self.future}, timeout=timeout)
        if not done:
            await self._cancel()
            raise TimeoutError(f"the application did not finish within {timeout} s")
        self.future.result()

    async def stop(self, exceptions: bool = True) -> None:
        """Cancel the application if it still runs; re-raise its error if ``exceptions``."""
        if not self.future.done():
            await self._cancel()
        elif exceptions and not self.future.cancelled():
            self.future.result()

    async def _cancel(self) -> None:
        self.future.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.future

    async def __aenter__(self) -> ApplicationCommunicator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop(exceptions=exc is None)


# What a browser leaves unescaped in a path and a query; "%" so that escapes stay as given.
_PATH_SAFE = "/:@!$&'()*+,;=%"
_QUERY_SAFE = _PATH_SAFE + "?"


def _split_path(path: str) -> tuple[str, bytes, bytes]:
    """``"/caf%C3%A9/?q=ü"`` -> ``("/café/", b"/caf%C3%A9/", b"q=%C3%BC")``.

    ``path`` is decoded, as servers pass it; ``raw_path`` and ``query_string`` are the bytes
    a browser would send (UTF-8, percent-escaped), whatever characters the test wrote.
    """
    parts = urlsplit(path)
    raw_path = quote(parts.path, safe=_PATH_SAFE).encode("ascii")
    query = quote(parts.query, safe=_QUERY_SAFE).encode("ascii")
    return unquote(parts.path), raw_path, query


class HttpCommunicator(ApplicationCommunicator):
    """Sends one HTTP request to an application and collects the response.

    ::

        response = await HttpCommunicator(app, "GET", "/health").get_response()
        assert response["status"] == 200
    """

    def __init__(
        self,
        application: ASGIApp,
        method: str,
        path: str,
        body: bytes = b"",
        headers: HeaderList | None = None,
        *,
        scope: dict[str, Any] | None = None,
    ) -> None:
        path_only, raw_path, query = _split_path(path)
        full: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method.upper(),
            "scheme": "http",
            "path": path_only,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": _headers(headers),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        full.update(scope or {})
        self.body = body
        self.sent_request = False
        super().__init__(application, full)

    async def send_request(self) -> None:
        """Send the request body (once)."""
        if not self.sent_request:
            self.sent_request = True
            await self.send_input({"type": "http.request", "body": self.body, "more_body": False})

    async def receive_start(self, timeout: float = 1) -> Message:
        """Send the request and return the ``http.response.start`` event."""
        await self.send_request()
        start = await self.receive_output(timeout)
        if start["type"] != "http.response.start":
            raise AssertionError(f"expected http.response.start, got {start!r}")
        return start

    async def receive_body_chunk(self, timeout: float = 1) -> Message:
        """The next ``http.response.body`` event (for streaming responses)."""
        chunk = await self.receive_output(timeout)
        if chunk["type"] != "http.response.body":
            raise AssertionError(f"expected http.response.body, got {chunk!r}")
        return chunk

    async def get_response(self, timeout: float = 1) -> dict[str, Any]:
        """``{"status", "headers", "body"}`` of the whole response."""
        start = await self.receive_start(timeout)
        body = b""
        while True:
            chunk = await self.receive_body_chunk(timeout)
            body += chunk.get("body", b"")
            if not chunk.get("more_body", False):
                break
        await self.wait(timeout)
        return {"status": start["status"], "headers": start.get("headers", []), "body": body}


class WebsocketCommunicator(ApplicationCommunicator):
    """Opens a WebSocket to an application, exchanges frames, and closes it.

    ::

        communicator = WebsocketCommunicator(app, "/ws/chat/lobby/")
        connected, subprotocol = await communicator.connect()
        await communicator.send_json_to({"text": "hi"})
        assert (await communicator.receive_json_from())["text"] == "hi"
        await communicator.disconnect()
    """

    def __init__(
        self,
        application: ASGIApp,
        path: str,
        headers: HeaderList | None = None,
        subprotocols: Iterable[str] | None = None,
        spec_version: str = "2.4",
        *,
        scope: dict[str, Any] | None = None,
    ) -> None:
        path_only, raw_path, query = _split_path(path)
        full: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": spec_version},
            "http_version": "1.1",
            "scheme": "ws",
            "path": path_only,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": _headers(headers),
            "subprotocols": list(subprotocols or ()),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        full.update(scope or {})
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.connected = False
        super().__init__(application, full)

    async def connect(self, timeout: float = 1) -> tuple[bool, Any]:
        """Open the connection: ``(True, subprotocol)`` if accepted, ``(False, close code)``."""
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        if response["type"] != "websocket.accept":
            raise AssertionError(f"expected websocket.accept or websocket.close, got {response!r}")
        self.connected = True
        self.response_headers = list(response.get("headers", []))
        return True, response.get("subprotocol")

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Send one frame from the client."""
        if (text_data is None) == (bytes_data is None):
            raise ValueError("send_to() needs exactly one of text_data and bytes_data")
        if text_data is not None:
            await self.send_input({"type": "websocket.receive", "text": text_data})
        else:
            await self.send_input({"type": "websocket.receive", "bytes": bytes_data})

    async def send_json_to(self, data: Any) -> None:
        """Send ``data`` as a JSON text frame."""
        await self.send_to(text_data=json.dumps(data))

    async def receive_from(self, timeout: float = 1) -> str | bytes:
        """The next frame the application sent (``str`` or ``bytes``)."""
        response = await self.receive_output(timeout)
        if response["type"] != "websocket.send":
            raise AssertionError(f"expected websocket.send, got {response!r}")
        if response.get("text") is not None:
            text: str = response["text"]
            return text
        data: bytes = response["bytes"]
        return data

    async def receive_json_from(self, timeout: float = 1) -> Any:
        """The next frame, which must be a JSON text frame, decoded."""
        payload = await self.receive_from(timeout)
        if not isinstance(payload, str):
            raise AssertionError(f"expected a JSON text frame, got bytes {payload!r}")
        return json.loads(payload)

    async def receive_close(self, timeout: float = 1) -> tuple[int, str]:
        """Wait for the application to close the connection: ``(code, reason)``."""
        response = await self.receive_output(timeout)
        if response["type"] != "websocket.close":
            raise AssertionError(f"expected websocket.close, got {response!r}")
        return int(response.get("code", 1000)), str(response.get("reason") or "")

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        """Close from the client's side and wait for the application to finish."""
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)
