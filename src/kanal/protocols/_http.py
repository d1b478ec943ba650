"""HTTP/1.1 without I/O: request bytes in, request events out; response messages in, bytes out.

Parsing is done by ``httptools`` (llhttp, the parser of Node.js); this module adds what a
server needs around it: size limits (RFC 9110 §15.5.15, RFC 6585 §5), version checks
(RFC 9110 §15.6.6), percent-decoding of the path for the ASGI scope, and the framing rules of
the response (RFC 9112 §6: ``Content-Length`` or chunked or close-delimited, HEAD, 1xx/204/304
without a body, keep-alive).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

import httptools

from kanal.exceptions import ASGIMessageError, InvalidHeader
from kanal.protocols._headers import check_header

__all__ = [
    "STATUS_PHRASES",
    "HTTPLimits",
    "HTTPParser",
    "ProtocolFailure",
    "RequestBody",
    "RequestEnd",
    "RequestEvent",
    "RequestStart",
    "ResponseWriter",
    "error_response",
]


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """Size limits applied while a request is parsed.

    ``max_request_line``: longest request target, in bytes; longer gets 414. 8 KiB is what
    nginx and most proxies accept (``large_client_header_buffers``), so nothing that passed a
    proxy is refused here.
    ``max_header_bytes``: total size of all header lines; more gets 431. 64 KiB leaves room
    for large cookies and tokens while bounding what a client can make the server hold.
    ``max_headers``: number of header lines; more gets 431. 100 is gunicorn's default.
    ``max_body_size``: request body, in bytes; ``None`` means no limit, which is safe because
    bodies are streamed to the application with flow control, never buffered whole.
    """

    max_request_line: int = 8 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    max_body_size: int | None = None


class RequestStart:
    """The request line and headers of a request are complete.

    ``headers`` keep their order, names are lower-cased (ASGI), values untouched.
    ``upgrade`` is the lower-cased ``Upgrade`` token when the client asked to switch to
    WebSocket (``b"websocket"``), else ``None``.
    """

    __slots__ = (
        "expect_continue",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query_string",
        "raw_path",
        "upgrade",
    )

    def __init__(
        self,
        method: str,
        http_version: str,
        raw_path: bytes,
        path: str,
        query_string: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        expect_continue: bool,
        upgrade: bytes | None,
    ) -> None:
        self.method = method
        self.http_version = http_version
        self.raw_path = raw_path
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.upgrade = upgrade

    def __repr__(self) -> str:
        return f"RequestStart({self.method} {self.raw_path!r} HTTP/{self.http_version})"


class RequestBody:
    """A piece of the request body (already de-chunked)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"RequestBody({len(self.data)} bytes)"


class RequestEnd:
    """The request, body included, is complete."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "RequestEnd()"


class ProtocolFailure:
    """The client broke the protocol or a limit; answer ``status`` and close.

    ``reason`` says what was wrong, for the log and the response body.
    """

    __slots__ = ("reason", "status")

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"ProtocolFailure({self.status}, {self.reason!r})"


RequestEvent = RequestStart | RequestBody | RequestEnd | ProtocolFailure

_END: Final = RequestEnd()


class _LimitExceeded(Exception):
    """Raised inside a parser callback to refuse the request; carries the status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _EndOfConnection(Exception):
    """Raised after the last request a connection may carry, so that no later one is read."""


class HTTPParser:
    """Turns the bytes of an HTTP/1.x connection into request events.

    Call :meth:`receive_data` with whatever arrived; it returns the events it completed.
    Pipelined requests come out in order. After a :class:`ProtocolFailure` or a WebSocket
    upgrade the parser stops; bytes that followed an upgrade request are kept in
    :attr:`upgrade_data` for the WebSocket protocol. It also stops after a request that
    ends the connection (``keep_alive`` false): what follows it is never read as a request.
    """

    __slots__ = (
        "_body_size",
        "_events",
        "_expect",
        "_header_bytes",
        "_headers",
        "_in_trailers",
        "_keep_alive",
        "_parser",
        "_upgrade",
        "_url",
        "limits",
        "stopped",
        "upgrade_data",
    )

    def __init__(self, limits: HTTPLimits | None = None) -> None:
        self.limits = limits or HTTPLimits()
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[RequestEvent] = []
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body_size = 0
        self._expect = False
        self._upgrade: bytes | None = None
        self._keep_alive = True
        self._in_trailers = False
        self.stopped = False
        self.upgrade_data = b""

    def receive_data(self, data: bytes) -> list[RequestEvent]:
        """Feed received bytes; return the events they completed (possibly none)."""
        if self.stopped:
            return []
        events = self._events = []
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.stopped = True
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self.upgrade_data = data[offset:]
            if self._upgrade != b"websocket":
                # An upgrade we do not speak (h2c...): answer the request as plain HTTP
                # (RFC 9110 §7.8 lets the server ignore Upgrade), then close, because the
                # parser cannot resume after an upgrade.
                for event in events:
                    if isinstance(event, RequestStart):
                        event.upgrade = None
                        event.keep_alive = False
        except _LimitExceeded as exc:
            self.stopped = True
            events.append(ProtocolFailure(exc.status, exc.reason))
        except httptools.HttpParserCallbackError as exc:
            self.stopped = True
            cause = exc.__context__
            if isinstance(cause, _LimitExceeded):
                events.append(ProtocolFailure(cause.status, cause.reason))
            elif isinstance(cause, _EndOfConnection):
                pass  # the request before it is complete; the server closes after answering
            else:
                events.append(ProtocolFailure(400, f"invalid request: {exc}"))
        except httptools.HttpParserError as exc:
            self.stopped = True
            if str(exc).startswith("Invalid HTTP version"):
                # llhttp itself refuses versions it cannot parse (HTTP/3.0, HTTP/1.2).
                events.append(ProtocolFailure(505, f"unsupported HTTP version: {exc}"))
            else:
                events.append(ProtocolFailure(400, f"malformed request: {exc}"))
        return events

    # httptools callbacks. They run inside feed_data().

    def on_message_begin(self) -> None:
        """httptools: a new request starts; reset the per-request state."""
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body_size = 0
        self._expect = False
        self._upgrade = None
        self._in_trailers = False

    def on_url(self, url: bytes) -> None:
        """httptools: a piece of the request target."""
        # The URL can arrive in several pieces when it spans two reads.
        self._url += url
        if len(self._url) > self.limits.max_request_line:
            raise _LimitExceeded(414, f"request target longer than {self.limits.max_request_line}")

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one header, counted against the limits."""
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.limits.max_header_bytes:
            raise _LimitExceeded(431, f"headers larger than {self.limits.max_header_bytes} bytes")
        if self._in_trailers:
            # A trailer field of a chunked body (RFC 9112 §7.1.2). It is not merged into the
            # headers (RFC 9110 §6.5.1): those are the scope the app, and middleware that
            # checked them, already hold, and a client could otherwise add a header there
            # after the checks. ASGI has no trailers for requests, so it is dropped.
            return
        if len(self._headers) >= self.limits.max_headers:
            raise _LimitExceeded(431, f"more than {self.limits.max_headers} headers")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        """httptools: the head is complete; the request starts."""
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _LimitExceeded(505, f"HTTP version {version} is not supported")
        url = self._url
        if url[:1] == b"/":
            raw_path, _, query = url.partition(b"?")
            raw_path, _, _ = raw_path.partition(b"#")
        elif url == b"*":
            raw_path, query = url, b""
        else:
            # absolute-form (RFC 9112 §3.2.2), as sent to proxies.
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise _LimitExceeded(400, f"invalid request target {url[:100]!r}") from None
            raw_path = parsed.path or b"/"
            query = parsed.query or b""
        # ASGI wants the path decoded as UTF-8; invalid sequences become U+FFFD (as in
        # uvicorn) rather than surrogates that would break the app's next encode().
        path = raw_path.decode("utf-8", "replace")
        if "%" in path:
            path = unquote(path)
        expect = False
        upgrade = None
        hosts = 0
        codings: list[bytes] | None = None
        max_body = self.limits.max_body_size
        for name, value in self._headers:
            if name == b"expect":
                expect = value.lower() == b"100-continue" and version == "1.1"
            elif name == b"upgrade":
                upgrade = value.lower().strip()
            elif name == b"host":
                hosts += 1
            elif name == b"transfer-encoding":
                if codings is None:
                    codings = []
                codings += [c.strip() for c in value.lower().split(b",")]
            elif name == b"content-length" and max_body is not None:
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # llhttp rejects a bad Content-Length itself
                if declared > max_body:
                    raise _LimitExceeded(413, f"body of {declared} bytes over {max_body}")
        if hosts > 1:
            # RFC 9112 §3.2: MUST answer 400. Two hosts could route one way and be read
            # another by the app (cache poisoning, virtual-host confusion).
            raise _LimitExceeded(400, "more than one Host header")
        keep_alive = parser.should_keep_alive()
        if codings is not None:
            # llhttp refuses Transfer-Encoding beside Content-Length, but a value that does
            # not end with chunked (``xchunked``) only once the body starts, after the app
            # was given the request, and it reads ``gzip, chunked`` as plain chunked.
            if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
                raise _LimitExceeded(400, "Transfer-Encoding must end with chunked, once")
            if len(codings) > 1:
                # RFC 9112 §6.1: a transfer coding the server does not understand SHOULD
                # get 501 (h11 does the same); the body would reach the app still encoded.
                raise _LimitExceeded(501, f"unsupported transfer coding {codings[0]!r}")
            if version == "1.0":
                # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
                # framing; a proxy in front may have framed it differently, so what
                # follows it on this connection cannot be trusted: answer it, then close.
                keep_alive = False
        if upgrade is not None and not parser.should_upgrade():
            upgrade = None
        self._expect = expect
        self._upgrade = upgrade
        self._keep_alive = keep_alive
        self._in_trailers = True
        self._events.append(
            RequestStart(
                parser.get_method().decode("ascii"),
                version,
                raw_path,
                path,
                query,
                self._headers,
                keep_alive,
                expect,
                upgrade,
            )
        )

    def on_body(self, body: bytes) -> None:
        """httptools: a piece of the body, counted against ``max_body_size``."""
        max_body = self.limits.max_body_size
        if max_body is not None:
            self._body_size += len(body)
            if self._body_size > max_body:
                raise _LimitExceeded(413, f"body larger than {max_body} bytes")
        self._events.append(RequestBody(body))

    def on_message_complete(self) -> None:
        """httptools: the request (body included) is complete."""
        self._events.append(_END)
        if not self._keep_alive and self._upgrade is None:
            raise _EndOfConnection


# Reason phrases are optional (RFC 9112 §4) but clients print them.
STATUS_PHRASES: Final[dict[int, bytes]] = {
    100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 201: b"Created",
    202: b"Accepted", 204: b"No Content", 206: b"Partial Content",
    301: b"Moved Permanently", 302: b"Found", 303: b"See Other", 304: b"Not Modified",
    307: b"Temporary Redirect", 308: b"Permanent Redirect", 400: b"Bad Request",
    401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 409: b"Conflict", 410: b"Gone", 411: b"Length Required",
    413: b"Content Too Large", 414: b"URI Too Long", 415: b"Unsupported Media Type",
    422: b"Unprocessable Content", 426: b"Upgrade Required", 429: b"Too Many Requests",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}  # fmt: skip

_STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, phrase) for code, phrase in STATUS_PHRASES.items()
}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        if type(status) is not int or not 100 <= status <= 999:
            raise ASGIMessageError(f"invalid HTTP status {status!r}")
        line = b"HTTP/1.1 %d \r\n" % status
    return line


def error_response(status: int, text: str, extra: bytes = b"") -> bytes:
    """A complete ``Connection: close`` plain-text response, for errors the server answers."""
    body = text.encode("utf-8", "replace") + b"\n"
    head = b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(body)
    return _status_line(status) + head + extra + b"connection: close\r\n\r\n" + body


class ResponseWriter:
    """Frames one response: ``start`` with status and headers, then ``body`` pieces.

    The head is held back until the first body piece so that a whole small response goes
    out in one write. :attr:`keep_alive` tells, once the response is complete, whether the
    connection can carry another request.
    """

    __slots__ = (
        "_chunked",
        "_head",
        "_head_only",
        "_remaining",
        "complete",
        "http11",
        "keep_alive",
        "started",
    )

    def __init__(self, *, head_only: bool, http11: bool, keep_alive: bool) -> None:
        self._head_only = head_only
        self.http11 = http11
        self.keep_alive = keep_alive
        self.started = False
        self.complete = False
        self._head = b""
        self._chunked = False
        # Bytes still allowed by the app's Content-Length; None when it gave none.
        self._remaining: int | None = None

    def start(
        self, status: int, headers: Iterable[tuple[bytes, bytes]], extra: bytes = b""
    ) -> None:
        """Record the response head. ``extra`` holds server header lines (Date...)."""
        if self.started:
            raise ASGIMessageError("http.response.start sent twice")
        parts = [_status_line(status), extra]
        content_length: int | None = None
        chunked = False
        try:
            for name, value in headers:
                # Every header is checked, the ones dropped below too: an app that sends a
                # bad one has a bug it should hear about whatever the request was.
                check_header(name, value)
                lname = name.lower()
                if lname == b"content-length":
                    if not value.isdigit():  # RFC 9110 §8.6: 1*DIGIT, no sign, no spaces
                        raise InvalidHeader(
                            f"invalid Content-Length {value!r}", name=name, value=value
                        )
                    content_length = int(value)
                elif lname == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                    if not self.http11:
                        continue  # HTTP/1.0 clients do not know chunked: close-delimit
                elif lname == b"connection":
                    if b"close" in value.lower():
                        self.keep_alive = False
                    continue
                parts.append(b"%s: %s\r\n" % (name, value))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ASGIMessageError):
                raise
            raise ASGIMessageError(f"invalid response headers: {exc}") from exc
        self.started = True
        if status < 200 or status == 204 or status == 304:
            # These never carry a body (RFC 9110 §6.4.1).
            self._head_only = True
            self._remaining = 0
        elif content_length is not None:
            self._remaining = content_length
        elif chunked and self.http11:
            self._chunked = True
        self._head = b"".join(parts)

    def body(self, data: bytes, more_body: bool) -> bytes:
        """Return the bytes to write for one body piece (the head too on the first call)."""
        if not self.started:
            raise ASGIMessageError("http.response.body sent before http.response.start")
        if self.complete:
            raise ASGIMessageError("http.response.body sent after the response ended")
        head = self._head
        if head:
            self._head = b""
            if self._remaining is None and not self._chunked:
                if not more_body:
                    # The whole body is known: frame it with Content-Length.
                    self._remaining = len(data)
                    head += b"content-length: %d\r\n" % len(data)
                elif self.http11:
                    self._chunked = True
                    head += b"transfer-encoding: chunked\r\n"
                else:
                    self.keep_alive = False  # close-delimited body (RFC 9112 §6.3)
            head += (
                b"connection: keep-alive\r\n\r\n"
                if self.keep_alive
                else (b"connection: close\r\n\r\n")
            )
        if not more_body:
            self.complete = True
        if self._head_only:
            return head
        if self._remaining is not None:
            self._remaining -= len(data)
            if self._remaining < 0:
                raise ASGIMessageError("response body longer than its Content-Length")
            if self.complete and self._remaining > 0:
                # The app promised more than it sent; the client would wait forever for the
                # rest, so this connection must end after the response.
                self.keep_alive = False
        if self._chunked:
            if data:
                chunk = b"%x\r\n%s\r\n" % (len(data), data)
                return head + chunk + b"0\r\n\r\n" if self.complete else head + chunk
            return head + b"0\r\n\r\n" if self.complete else head
        return head + data if head else data

    @property
    def pending_head(self) -> bool:
        """True when a head was started but nothing has been written yet."""
        return bool(self._head)
