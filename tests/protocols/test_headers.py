"""Application headers on their way out: one check for the HTTP head, the 101 and the denial."""

from __future__ import annotations

import pytest

from kanal.exceptions import ASGIMessageError, InvalidHeader
from kanal.protocols import ResponseWriter, WebSocketConnection
from kanal.protocols._headers import check_header

HEADERS = [
    (b"host", b"x"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
]

# Every byte a field value may not hold (RFC 9110 §5.5): the controls but HTAB, and DEL.
FORBIDDEN_IN_VALUES = [bytes([b]) for b in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F)]
# A name is a token (RFC 9110 §5.6.2): no separators, spaces, controls or bytes >= 0x80.
FORBIDDEN_IN_NAMES = [bytes([b]) for b in b'\x00\t\n\r :;,"()/<=>?@[\\]{}\x7f\x80\xe9\xff']


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"X-Odd_But.Valid!#$%&'*+^`|~", b"v"),
        (b"x-empty", b""),
        (b"x-tab", b"a\tb"),
        (b"x-latin1", b"caf\xe9"),  # obs-text is allowed
        (b"x-padded", b" spaced "),  # outer spaces become the OWS of RFC 9112 §5.1
    ],
)
def test_valid_headers_pass(name: bytes, value: bytes) -> None:
    check_header(name, value)


@pytest.mark.parametrize("byte", FORBIDDEN_IN_VALUES, ids=lambda b: f"0x{b[0]:02x}")
def test_every_forbidden_value_byte_is_refused(byte: bytes) -> None:
    with pytest.raises(InvalidHeader, match="invalid value for header") as info:
        check_header(b"x-test", b"a" + byte + b"b")
    assert info.value.name == b"x-test"
    assert info.value.value == b"a" + byte + b"b"


@pytest.mark.parametrize("byte", FORBIDDEN_IN_NAMES, ids=lambda b: f"0x{b[0]:02x}")
def test_every_non_token_name_byte_is_refused(byte: bytes) -> None:
    with pytest.raises(InvalidHeader, match="invalid header name"):
        check_header(b"x" + byte + b"y", b"v")


@pytest.mark.parametrize(
    ("name", "value"), [(b"", b"v"), ("x-str", b"v"), (b"x", "str value"), (b"x", 5)]
)
def test_empty_names_and_non_bytes_are_refused(name: object, value: object) -> None:
    with pytest.raises(InvalidHeader):
        check_header(name, value)  # type: ignore[arg-type]


def test_invalid_header_is_an_asgi_message_error_and_a_value_error() -> None:
    # Code that catches the server's errors or ValueError keeps catching it.
    assert issubclass(InvalidHeader, ASGIMessageError)
    assert issubclass(InvalidHeader, ValueError)


# The hostile headers an application could be made to send (a user-supplied redirect target
# or file name copied into a header): each must be refused before a byte goes out.
HOSTILE = [
    pytest.param(b"x-name\r\nSet-Cookie", b"admin=1", id="CRLF in name"),
    pytest.param(b"x-name\nSet-Cookie", b"admin=1", id="LF in name"),
    pytest.param(b"x-name: injected", b"v", id="colon and space in name"),
    pytest.param(b"x\x00name", b"v", id="NUL in name"),
    pytest.param(b"location", b"/next\r\nSet-Cookie: admin=1", id="CRLF in value"),
    pytest.param(b"location", b"/next\rSet-Cookie: admin=1", id="bare CR in value"),
    pytest.param(b"location", b"/next\nSet-Cookie: admin=1", id="bare LF in value"),
    pytest.param(b"x-file", b"report\x00.pdf", id="NUL in value"),
    pytest.param(b"x-file", b"a\x7fb", id="DEL in value"),
]


@pytest.mark.parametrize(("name", "value"), HOSTILE)
@pytest.mark.parametrize("status", [200, 401])  # an HTTP response, or a WebSocket denial
def test_response_head_refuses_hostile_headers(status: int, name: bytes, value: bytes) -> None:
    writer = ResponseWriter(head_only=False, http11=True, keep_alive=True)
    with pytest.raises(InvalidHeader):
        writer.start(status, [(b"content-type", b"text/plain"), (name, value)])
    # Nothing was recorded: the server can still answer 500, or the app a valid response.
    assert not writer.started
    writer.start(status, [(b"content-type", b"text/plain")])
    assert b"Set-Cookie" not in writer.body(b"ok", False)


@pytest.mark.parametrize(
    ("name", "value"),
    [(b"connection", b"close\r\nX-Injected: 1"), (b"transfer-encoding", b"chunked\x00")],
)
def test_headers_the_writer_drops_are_checked_too(name: bytes, value: bytes) -> None:
    writer = ResponseWriter(head_only=False, http11=False, keep_alive=True)
    with pytest.raises(InvalidHeader):
        writer.start(200, [(name, value)])


@pytest.mark.parametrize("value", [b"+5", b"-1", b"5_0", b" 5", b"0x5", b""])
def test_content_length_must_be_digits(value: bytes) -> None:
    writer = ResponseWriter(head_only=False, http11=True, keep_alive=True)
    with pytest.raises(InvalidHeader, match="invalid Content-Length"):
        writer.start(200, [(b"content-length", value)])


@pytest.mark.parametrize(("name", "value"), HOSTILE)
def test_websocket_101_refuses_hostile_accept_headers(name: bytes, value: bytes) -> None:
    ws = WebSocketConnection()
    with pytest.raises(InvalidHeader):
        ws.accept("/", HEADERS, None, [(b"x-fine", b"1"), (name, value)])
    assert not ws.open
    # The handshake is still undecided: a second accept with valid headers succeeds.
    out, status = ws.accept("/", HEADERS, None, [(b"x-fine", b"1")])
    assert status == 101
    assert b"x-fine: 1\r\n" in out
    assert b"admin" not in out
