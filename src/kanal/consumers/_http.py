"""HTTP consumers: whole and streaming responses, and server-sent events."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable

from kanal.consumers._base import AsyncConsumer
from kanal.exceptions import StopConsumer
from kanal.typing import Message, Send, header_value

__all__ = ["AsyncHttpConsumer", "AsyncSseConsumer"]

logger = logging.getLogger("kanal.consumers")

Headers = Iterable[tuple[bytes | str, bytes | str]]

# 10 MiB: far above a form or a JSON API call; a client sending more is sending a file,
# which a consumer that buffers the whole body should not accept by accident.
DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024


def _raw(value: bytes | str) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


class AsyncHttpConsumer(AsyncConsumer):
    """An HTTP consumer: override :meth:`handle`, which gets the whole request body.

    The response may end inside ``handle`` (:meth:`send_response`) or later: send the
    headers and ``send_body(..., more_body=True)``, and finish from a layer message's
    handler (long polling, streaming). The consumer stops when the response is complete or
    the client goes away; ``groups`` are joined before ``handle`` and left then.
    """

    #: Groups joined before :meth:`handle` and left when the response ends.
    groups: list[str] = []
    #: Larger request bodies get 413 without calling :meth:`handle`.
    max_body_size: int = DEFAULT_MAX_BODY_SIZE

    _started = False
    _complete = False
    _finished = False

    def _track_send(self, send: Send) -> Send:
        async def tracked(message: Message) -> None:
            await send(message)  # first: a send that raised did not start anything
            kind = message.get("type")
            if kind == "http.response.start":
                self._started = True
            elif kind == "http.response.body" and not message.get("more_body", False):
                self._complete = True

        return tracked

    async def handle(self, body: bytes) -> None:
        """Answer the request; override it."""
        raise NotImplementedError(f"{type(self).__name__} must override handle(body)")

    async def disconnect(self) -> None:
        """Called once the response is complete or the client went away; override it."""

    # -- sending ----------------------------------------------------------------------------

    async def send_headers(self, *, status: int = 200, headers: Headers | None = None) -> None:
        """Start the response."""
        await self.base_send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(_raw(name).lower(), _raw(value)) for name, value in headers or ()],
            }
        )

    async def send_body(self, body: bytes, *, more_body: bool = False) -> None:
        """Send a part of the body; ``more_body=False`` (the default) ends the response."""
        if not isinstance(body, bytes):
            raise TypeError(f"send_body() needs bytes, not {type(body).__name__}")
        await self.base_send({"type": "http.response.body", "body": body, "more_body": more_body})

    async def send_response(
        self, status: int, body: bytes, *, headers: Headers | None = None
    ) -> None:
        """Send a whole response at once."""
        await self.send_headers(status=status, headers=headers)
        await self.send_body(body)

    # -- protocol handlers ------------------------------------------------------------------

    async def http_request(self, message: Message) -> None:
        """Collect the body; once complete, join the groups and call :meth:`handle`."""
        chunks: list[bytes] = self.__dict__.setdefault("_body", [])
        chunks.append(message.get("body", b""))
        size = self.__dict__["_size"] = self.__dict__.get("_size", 0) + len(chunks[-1])
        if size > self.max_body_size:
            logger.warning(
                "%s: request body over max_body_size (%d bytes); answered 413",
                type(self).__name__,
                self.max_body_size,
            )
            await self.send_response(413, b"Payload Too Large\n")
            await self._finish()
        if message.get("more_body", False):
            return
        await self._join_declared_groups(self.groups)
        await self.handle(b"".join(chunks))

    async def http_disconnect(self, message: Message) -> None:
        """The client went away: finish."""
        await self._finish()

    async def dispatch(self, message: Message) -> None:
        """Dispatch, then stop once the response is complete."""
        await super().dispatch(message)
        if self._complete:
            await self._finish()

    async def _finish(self) -> None:
        await self._leave_groups()
        if not self._finished:
            self._finished = True
            await self.run_with_deadline("disconnect", self.disconnect)
        raise StopConsumer

    async def on_failure(self, exc: BaseException, message: Message) -> None:
        """Answer 500 if nothing was sent yet, else end the body; then clean up."""
        if self.client_gone:
            pass
        elif not self._started:
            await self.send_response(
                500, b"Internal Server Error\n", headers=[(b"content-type", b"text/plain")]
            )
        elif not self._complete:
            await self.send_body(b"")
        with contextlib.suppress(StopConsumer):
            await self._finish()


_NEWLINES = re.compile(r"\r\n|\r|\n")


def format_event(
    data: str, *, event: str | None = None, id: str | None = None, retry: int | None = None
) -> bytes:
    """One server-sent event in the wire format (each line of ``data`` its own field)."""
    lines: list[str] = []
    for name, value in (("event", event), ("id", id)):
        if value is not None:
            if _NEWLINES.search(value) or (name == "id" and "\0" in value):
                raise ValueError(f"the SSE {name} field cannot contain a newline: {value!r}")
            lines.append(f"{name}: {value}")
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    lines.extend(f"data: {line}" for line in _NEWLINES.split(data))
    return ("\n".join(lines) + "\n\n").encode()


class AsyncSseConsumer(AsyncHttpConsumer):
    """A stream of server-sent events (``text/event-stream``), fed by layer messages.

    ::

        class Notifications(AsyncSseConsumer):
            groups = ["news"]

            async def news_item(self, message):
                await self.send_event(message["text"], event="news")

    The stream opens in :meth:`handle`; override :meth:`connect` to send the first events
    (``self.last_event_id`` is the browser's ``Last-Event-ID`` after a reconnect).
    """

    #: Milliseconds the browser should wait before reconnecting (``None``: its default).
    retry: int | None = None

    @property
    def last_event_id(self) -> str | None:
        """The ``Last-Event-ID`` request header, sent by a reconnecting ``EventSource``."""
        value = header_value(self.scope, b"last-event-id")
        return value.decode("latin-1") if value is not None else None

    async def handle(self, body: bytes) -> None:
        """Send the stream's headers, then call :meth:`connect`."""
        await self.send_headers(
            status=200,
            headers=[
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                # Proxies (nginx) buffer responses unless told not to, which holds events back.
                (b"x-accel-buffering", b"no"),
            ],
        )
        opening = f"retry: {self.retry}\n\n" if self.retry is not None else ": stream open\n\n"
        await self.send_body(opening.encode(), more_body=True)
        await self.connect()

    async def connect(self) -> None:
        """Called once the stream is open; override it to send the first events."""

    async def send_event(
        self,
        data: str,
        *,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
    ) -> None:
        """Send one event; multi-line ``data`` is split into ``data:`` lines as the spec says."""
        await self.send_body(format_event(data, event=event, id=id, retry=retry), more_body=True)

    async def close(self) -> None:
        """End the stream (the browser's ``EventSource`` will reconnect unless told not to)."""
        await self.send_body(b"")

    async def send_comment(self, text: str = "") -> None:
        """Send a comment, e.g. as a keep-alive through idle proxies.

        Each line of ``text`` becomes its own comment line, so no text can start an event.
        """
        lines = "".join(f": {line}\n" for line in _NEWLINES.split(text))
        await self.send_body(f"{lines}\n".encode(), more_body=True)
