"""What kanal answers to hostile request bytes: one table, each row fed to the parser.

A row gives the bytes, the status the server answers itself (``APP`` when the request goes
to the application), whether the connection closes after it, and which requests reach the
application. Most rows end with a second, pipelined request (``SMUGGLED``): when the first
one's framing is in doubt, that one must never be read. docs/server.md ("Hostile input")
lists the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kanal.protocols import HTTPLimits, HTTPParser, ProtocolFailure, RequestBody, RequestStart

APP = 0  # no status of the server's own: the request reaches the application
CLOSES, OPEN = True, False  # the connection after the answer
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST / HTTP/1.1\r\nHost: x\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"


@dataclass(frozen=True)
class Hostile:
    """One row: ``data`` is answered ``status`` (or reaches the app), then maybe closed."""

    data: bytes
    status: int
    closes: bool
    reach_app: tuple[bytes, ...]
    limits: HTTPLimits | None = None


def row(
    name: str,
    status: int,
    closes: bool,
    data: bytes,
    reach_app: tuple[bytes, ...] = (),
    limits: HTTPLimits | None = None,
) -> object:
    return pytest.param(Hostile(data, status, closes, reach_app, limits), id=name)


ROWS = [
    # Request smuggling: a body whose length two parsers could read differently.
    row(
        "CL then TE",
        400,
        CLOSES,
        POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    ),
    row(
        "TE then CL",
        400,
        CLOSES,
        POST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    ),
    row(
        "two different CL",
        400,
        CLOSES,
        POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    ),
    row("two equal CL", 400, CLOSES, POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    row("CL as a list", 400, CLOSES, POST + b"Content-Length: 3, 3\r\n\r\nabc"),
    row("CL with a sign", 400, CLOSES, POST + b"Content-Length: +3\r\n\r\nabc"),
    row("negative CL", 400, CLOSES, POST + b"Content-Length: -3\r\n\r\nabc"),
    row(
        "CL overflowing 64 bits",
        400,
        CLOSES,
        POST + b"Content-Length: 99999999999999999999999\r\n\r\n",
    ),
    row(
        "TE chunked not last",
        400,
        CLOSES,
        POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" + SMUGGLED,
    ),
    row(
        "TE chunked twice",
        400,
        CLOSES,
        POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    ),
    row(
        "TE chunked twice on two lines",
        400,
        CLOSES,
        POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    row(
        "TE not chunked at all",
        400,
        CLOSES,
        POST + b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n" + SMUGGLED,
    ),
    row("TE empty", 400, CLOSES, POST + b"Transfer-Encoding: \r\n\r\n0\r\n\r\n"),
    row(
        "TE unknown coding",
        501,
        CLOSES,
        POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    ),
    row(
        "TE unknown coding on its own line",
        501,
        CLOSES,
        POST + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    row(
        "TE space before colon", 400, CLOSES, POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
    ),
    row("TE vertical tab", 400, CLOSES, POST + b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n"),
    row("TE obs-folded", 400, CLOSES, POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
    row(
        "TE in HTTP/1.0 with keep-alive",
        APP,
        CLOSES,
        b"POST /first HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        (b"/first",),
    ),
    row(
        "TE in HTTP/1.0",
        APP,
        CLOSES,
        b"POST /first HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        (b"/first",),
    ),
    row(
        "TE and CL in HTTP/1.0",
        400,
        CLOSES,
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    ),
    row(
        "request after Connection: close",
        APP,
        CLOSES,
        b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + SMUGGLED,
        (b"/first",),
    ),
    # Chunked bodies: the head reached the app, the bad chunk ends the request there.
    row(
        "chunk size not hex", 400, CLOSES, CHUNKED + b"zz\r\nhello\r\n0\r\n\r\n" + SMUGGLED, (b"/",)
    ),
    row("chunk size overflow", 400, CLOSES, CHUNKED + b"fffffffffffffffffff\r\nhello\r\n", (b"/",)),
    row("negative chunk size", 400, CLOSES, CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n", (b"/",)),
    row("chunk size with 0x", 400, CLOSES, CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n", (b"/",)),
    row("space after chunk size", 400, CLOSES, CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n", (b"/",)),
    row(
        "chunk longer than its size",
        400,
        CLOSES,
        CHUNKED + b"3\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        (b"/",),
    ),
    row("bare LF after chunk size", 400, CLOSES, CHUNKED + b"5\nhello\r\n0\r\n\r\n", (b"/",)),
    row("bare LF after chunk data", 400, CLOSES, CHUNKED + b"5\r\nhello\n0\r\n\r\n", (b"/",)),
    row(
        "chunk extension",
        APP,
        OPEN,
        CHUNKED + b"5;name=value\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        (b"/", b"/smuggled"),
    ),
    # Line endings and whitespace.
    row("bare LF line endings", 400, CLOSES, b"GET / HTTP/1.1\nHost: x\n\n"),
    row("bare LF inside a header", 400, CLOSES, b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\nB: 2\r\n\r\n"),
    row("bare CR inside a header", 400, CLOSES, b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\rB: 2\r\n\r\n"),
    row("bare CR ending the request line", 400, CLOSES, b"GET / HTTP/1.1\rHost: x\r\n\r\n"),
    row("obs-fold", 400, CLOSES, b"GET / HTTP/1.1\r\nHost: x\r\nA: one\r\n two\r\n\r\n"),
    row("space before the first header", 400, CLOSES, b"GET / HTTP/1.1\r\n Host: x\r\n\r\n"),
    row("space before a colon", 400, CLOSES, b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
    row(
        "empty line before the request",
        APP,
        OPEN,
        b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        (b"/",),
    ),
    # Bytes inside header names and values.
    row("NUL in a name", 400, CLOSES, b"GET / HTTP/1.1\r\nHost: x\r\nA\x00B: 1\r\n\r\n"),
    row("NUL in a value", 400, CLOSES, b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\x002\r\n\r\n"),
    row("control byte in a value", 400, CLOSES, b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\x012\r\n\r\n"),
    row("DEL in a value", 400, CLOSES, b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\x7f2\r\n\r\n"),
    row("byte over 0x7F in a name", 400, CLOSES, b"GET / HTTP/1.1\r\nHost: x\r\nA\xe9: 1\r\n\r\n"),
    row("empty name", 400, CLOSES, b"GET / HTTP/1.1\r\nHost: x\r\n: 1\r\n\r\n"),
    row("tab in a value", APP, OPEN, b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\t2\r\n\r\n", (b"/",)),
    row(
        "byte over 0x7F in a value",
        APP,
        OPEN,
        b"GET / HTTP/1.1\r\nHost: x\r\nA: caf\xe9\r\n\r\n",
        (b"/",),
    ),
    # The request line.
    row("unknown method", 400, CLOSES, b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n"),
    row("NUL in the target", 400, CLOSES, b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n"),
    row("space in the target", 400, CLOSES, b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
    row("raw UTF-8 in the target", 400, CLOSES, b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"),
    row("HTTP/0.9", 505, CLOSES, b"GET / HTTP/0.9\r\nHost: x\r\n\r\n"),
    row("HTTP/1.2", 505, CLOSES, b"GET / HTTP/1.2\r\nHost: x\r\n\r\n"),
    row("HTTP/2.0 in HTTP/1 syntax", 505, CLOSES, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
    row("lower-case protocol name", 400, CLOSES, b"GET / http/1.1\r\nHost: x\r\n\r\n"),
    # Host (RFC 9112 §3.2).
    row(
        "two Host headers", 400, CLOSES, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + SMUGGLED
    ),
    row("no Host header", APP, OPEN, b"GET / HTTP/1.1\r\n\r\n", (b"/",)),
    # Sizes (the defaults, and a configured body limit).
    row("target over 8 KiB", 414, CLOSES, b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\n\r\n"),
    row(
        "headers over 64 KiB",
        431,
        CLOSES,
        b"GET / HTTP/1.1\r\n" + b"A: " + b"v" * 66000 + b"\r\n\r\n",
    ),
    row("more than 100 headers", 431, CLOSES, b"GET / HTTP/1.1\r\n" + b"A: 1\r\n" * 101 + b"\r\n"),
    row(
        "declared body over the limit",
        413,
        CLOSES,
        POST + b"Content-Length: 17\r\n\r\n",
        limits=HTTPLimits(max_body_size=16),
    ),
    row(
        "chunked body over the limit",
        413,
        CLOSES,
        CHUNKED + b"10\r\n" + b"x" * 16 + b"\r\n1\r\nx\r\n",
        (b"/",),
        HTTPLimits(max_body_size=16),
    ),
]


@pytest.mark.parametrize("case", ROWS)
def test_hostile_request(case: Hostile) -> None:
    parser = HTTPParser(case.limits)
    events = parser.receive_data(case.data)
    starts = [event for event in events if isinstance(event, RequestStart)]
    failures = [event for event in events if isinstance(event, ProtocolFailure)]
    assert len(failures) <= 1, events
    status = failures[0].status if failures else APP
    # The server closes after any failure, and after a request that is not keep-alive.
    closes = bool(failures) or any(not start.keep_alive for start in starts)
    assert (status, closes) == (case.status, case.closes), events
    assert tuple(start.raw_path for start in starts) == case.reach_app
    if closes:
        # Nothing more is read on this connection, whatever the client sends.
        assert parser.receive_data(SMUGGLED) == []


def test_trailer_fields_are_not_added_to_the_headers() -> None:
    # The headers are the app's scope, already checked by middleware: a trailer at the end
    # of a chunked body must not add to them (RFC 9110 §6.5.1).
    events = HTTPParser().receive_data(
        CHUNKED + b"5\r\nhello\r\n0\r\nAuthorization: Bearer forged\r\n\r\n" + SMUGGLED
    )
    start = events[0]
    assert isinstance(start, RequestStart)
    assert start.headers == [(b"host", b"x"), (b"transfer-encoding", b"chunked")]
    assert [e.data for e in events if isinstance(e, RequestBody)] == [b"hello"]
    assert [e.raw_path for e in events if isinstance(e, RequestStart)] == [b"/", b"/smuggled"]
