"""HTTP/1.1 protocol core: bytes in, events out; response messages in, bytes out."""

from __future__ import annotations

import pytest

from kanal.exceptions import ASGIMessageError
from kanal.protocols import (
    HTTPLimits,
    HTTPParser,
    ProtocolFailure,
    RequestBody,
    RequestEnd,
    RequestStart,
    ResponseWriter,
    error_response,
)


def feed(data: bytes, limits: HTTPLimits | None = None) -> list[object]:
    return list(HTTPParser(limits).receive_data(data))


def test_simple_get_scope_parts() -> None:
    events = feed(b"GET /caf%C3%A9/a%2Fb?x=1&y=%20 HTTP/1.1\r\nHost: example\r\nX-Up: A\r\n\r\n")
    start, end = events
    assert isinstance(start, RequestStart)
    assert isinstance(end, RequestEnd)
    assert start.method == "GET"
    assert start.http_version == "1.1"
    assert start.raw_path == b"/caf%C3%A9/a%2Fb"
    assert start.path == "/café/a/b"
    assert start.query_string == b"x=1&y=%20"
    assert start.headers == [(b"host", b"example"), (b"x-up", b"A")]
    assert start.keep_alive is True
    assert start.upgrade is None


@pytest.mark.parametrize(
    ("target", "path", "raw_path", "query"),
    [
        (b"http://example.com/a%20b?q=1", "/a b", b"/a%20b", b"q=1"),  # absolute-form
        (b"*", "*", b"*", b""),  # OPTIONS *
        (b"/bad%FFutf8", "/bad\ufffdutf8", b"/bad%FFutf8", b""),
        (b"/%E2%82%AC/x#frag", "/\u20ac/x", b"/%E2%82%AC/x", b""),
    ],
)
def test_request_targets(target: bytes, path: str, raw_path: bytes, query: bytes) -> None:
    method = b"OPTIONS" if target == b"*" else b"GET"
    start = feed(method + b" " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")[0]
    assert isinstance(start, RequestStart), start
    assert (start.path, start.raw_path, start.query_string) == (path, raw_path, query)


def test_pipelined_requests_come_out_in_order_with_bodies() -> None:
    events = feed(
        b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "RequestStart", "RequestBody", "RequestEnd",
        "RequestStart", "RequestEnd", "RequestStart", "RequestEnd",
    ]  # fmt: skip
    paths = [e.raw_path for e in events if isinstance(e, RequestStart)]
    assert paths == [b"/one", b"/two", b"/three"]
    assert [e.data for e in events if isinstance(e, RequestBody)] == [b"abc"]


def test_chunked_request_body_is_dechunked_across_reads() -> None:
    parser = HTTPParser()
    events = parser.receive_data(
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"
    )
    events += parser.receive_data(b"lo\r\n6\r\n world\r\n0\r\n\r\n")
    body = b"".join(e.data for e in events if isinstance(e, RequestBody))
    assert body == b"hello world"
    assert isinstance(events[-1], RequestEnd)


def test_request_split_byte_by_byte() -> None:
    parser = HTTPParser()
    events: list[object] = []
    for byte in b"GET /slow?q=1 HTTP/1.1\r\nHost: x\r\n\r\n":
        events += parser.receive_data(bytes([byte]))
    start = events[0]
    assert isinstance(start, RequestStart)
    assert (start.raw_path, start.query_string) == (b"/slow", b"q=1")


def test_http10_defaults_to_close_unless_keep_alive() -> None:
    (start, _) = feed(b"GET / HTTP/1.0\r\n\r\n")
    assert isinstance(start, RequestStart)
    assert (start.http_version, start.keep_alive) == ("1.0", False)
    (start, _) = feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert isinstance(start, RequestStart)
    assert start.keep_alive is True


def test_expect_continue_flag() -> None:
    start = feed(
        b"PUT /f HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )[0]
    assert isinstance(start, RequestStart)
    assert start.expect_continue is True


def test_websocket_upgrade_keeps_following_bytes() -> None:
    parser = HTTPParser()
    events = parser.receive_data(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n\x81\x80"
    )
    start = events[0]
    assert isinstance(start, RequestStart)
    assert start.upgrade == b"websocket"
    assert parser.upgrade_data == b"\x81\x80"
    assert parser.stopped


def test_unknown_upgrade_is_served_as_http_then_closed() -> None:
    events = feed(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
    start = events[0]
    assert isinstance(start, RequestStart)
    assert start.upgrade is None
    assert start.keep_alive is False


@pytest.mark.parametrize(
    ("data", "limits", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", None, 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", None, 400),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", None, 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", None, 505),
        (b"GET / HTTP/1.1\nHost: x\n\n", None, 400),  # bare LF line endings
        # Request smuggling: ambiguous framing is refused, never guessed (RFC 9112 §6.3).
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", None, 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", None, 400),
        (b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", None, 505),
        (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n", HTTPLimits(max_request_line=50), 414),
        (
            b"GET / HTTP/1.1\r\nA: " + b"v" * 200 + b"\r\n\r\n",
            HTTPLimits(max_header_bytes=100),
            431,
        ),
        (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", HTTPLimits(max_headers=2), 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", HTTPLimits(max_body_size=10), 413),
    ],
)
def test_bad_requests_fail_with_the_right_status(
    data: bytes, limits: HTTPLimits | None, status: int
) -> None:
    events = feed(data, limits)
    failure = events[-1]
    assert isinstance(failure, ProtocolFailure), events
    assert failure.status == status
    assert failure.reason


def test_chunked_body_over_the_limit_fails_midway() -> None:
    parser = HTTPParser(HTTPLimits(max_body_size=8))
    events = parser.receive_data(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n"
    )
    assert isinstance(events[0], RequestStart)
    assert isinstance(events[-1], ProtocolFailure)
    assert events[-1].status == 413
    assert parser.receive_data(b"0\r\n\r\n") == []  # the parser stopped


def test_response_single_body_gets_content_length_in_one_piece() -> None:
    writer = ResponseWriter(head_only=False, http11=True, keep_alive=True)
    writer.start(200, [(b"content-type", b"text/plain")], b"date: X\r\n")
    out = writer.body(b"hello", False)
    assert out == (
        b"HTTP/1.1 200 OK\r\ndate: X\r\ncontent-type: text/plain\r\n"
        b"content-length: 5\r\nconnection: keep-alive\r\n\r\nhello"
    )
    assert writer.complete and writer.keep_alive


def test_response_streamed_body_is_chunked_on_http11() -> None:
    writer = ResponseWriter(head_only=False, http11=True, keep_alive=True)
    writer.start(200, [])
    first = writer.body(b"abc", True)
    assert b"transfer-encoding: chunked\r\n" in first
    assert first.endswith(b"\r\n\r\n3\r\nabc\r\n")
    assert writer.body(b"", True) == b""
    assert writer.body(b"de", False) == b"2\r\nde\r\n0\r\n\r\n"


def test_response_streamed_body_on_http10_is_close_delimited() -> None:
    writer = ResponseWriter(head_only=False, http11=False, keep_alive=True)
    writer.start(200, [])
    first = writer.body(b"abc", True)
    assert b"chunked" not in first
    assert b"connection: close" in first
    assert writer.body(b"de", False) == b"de"
    assert writer.keep_alive is False


def test_head_response_has_headers_but_no_body() -> None:
    writer = ResponseWriter(head_only=True, http11=True, keep_alive=True)
    writer.start(200, [(b"content-length", b"5")])
    out = writer.body(b"hello", False)
    assert out.endswith(b"\r\n\r\n")
    assert b"content-length: 5" in out
    assert b"hello" not in out


def test_204_and_304_never_carry_a_body() -> None:
    for status in (204, 304):
        writer = ResponseWriter(head_only=False, http11=True, keep_alive=True)
        writer.start(status, [])
        out = writer.body(b"ignored", False)
        assert b"content-length" not in out
        assert out.endswith(b"\r\n\r\n")


def test_body_longer_than_content_length_is_an_app_error() -> None:
    writer = ResponseWriter(head_only=False, http11=True, keep_alive=True)
    writer.start(200, [(b"content-length", b"2")])
    with pytest.raises(ASGIMessageError, match="longer than its Content-Length"):
        writer.body(b"abc", False)


def test_body_shorter_than_content_length_ends_keep_alive() -> None:
    writer = ResponseWriter(head_only=False, http11=True, keep_alive=True)
    writer.start(200, [(b"content-length", b"10")])
    writer.body(b"abc", False)
    assert writer.keep_alive is False


@pytest.mark.parametrize(
    ("status", "headers", "match"),
    [
        (200, [(b"x", b"a\r\nInjected: yes")], "invalid value for header"),
        (200, [("str-name", b"v")], "invalid header name"),
        (200, [(b"content-length", b"nope")], "invalid Content-Length"),
        (200, [(b"x", b"v", b"extra")], "invalid response headers"),
        (99999, [], "invalid HTTP status"),
        ("200", [], "invalid HTTP status"),
    ],
)
def test_invalid_response_start_is_rejected(status: object, headers: object, match: str) -> None:
    writer = ResponseWriter(head_only=False, http11=True, keep_alive=True)
    with pytest.raises(ASGIMessageError, match=match):
        writer.start(status, headers)  # type: ignore[arg-type]


def test_response_start_twice_and_body_first_are_app_errors() -> None:
    writer = ResponseWriter(head_only=False, http11=True, keep_alive=True)
    with pytest.raises(ASGIMessageError, match=r"before http\.response\.start"):
        writer.body(b"x", False)
    writer.start(200, [])
    with pytest.raises(ASGIMessageError, match="sent twice"):
        writer.start(200, [])
    writer.body(b"", False)
    with pytest.raises(ASGIMessageError, match="after the response ended"):
        writer.body(b"x", False)


def test_connection_close_from_app_ends_keep_alive() -> None:
    writer = ResponseWriter(head_only=False, http11=True, keep_alive=True)
    writer.start(200, [(b"Connection", b"close")])
    out = writer.body(b"", False)
    assert out.count(b"connection:") == 1
    assert b"connection: close" in out
    assert writer.keep_alive is False


def test_error_response_is_complete() -> None:
    out = error_response(431, "too big")
    assert out.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert out.endswith(b"\r\n\r\ntoo big\n")
    assert b"content-length: 8\r\n" in out
