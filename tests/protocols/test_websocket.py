"""WebSocket protocol core: frames in, messages and close events out, no sockets."""

from __future__ import annotations

import pytest
from websockets.frames import Close, Frame, Opcode

from kanal.protocols import (
    WebSocketClosed,
    WebSocketConnection,
    WebSocketMessage,
    WebSocketPong,
    handshake_problem,
)

HEADERS = [
    (b"host", b"x"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
]


def frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True, extensions=[])


def server_frames(data: bytes) -> list[Frame]:
    """Parse what the server wrote, as a client would."""
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.uri import parse_uri

    client = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN)
    client.receive_data(data)
    return [e for e in client.events_received() if isinstance(e, Frame)]


def opened(**kwargs: object) -> WebSocketConnection:
    ws = WebSocketConnection(**kwargs)  # type: ignore[arg-type]
    out, status = ws.accept("/chat", HEADERS)
    assert status == 101
    # RFC 6455 §1.3's worked example of the accept key.
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in out
    return ws


def test_accept_with_subprotocol_and_headers() -> None:
    ws = WebSocketConnection()
    headers = [*HEADERS, (b"sec-websocket-protocol", b"chat, superchat")]
    out, status = ws.accept(
        "/", headers, "superchat", [(b"set-cookie", b"a=1"), (b"upgrade", b"nope")]
    )
    assert status == 101
    assert b"Sec-WebSocket-Protocol: superchat\r\n" in out
    assert b"set-cookie: a=1\r\n" in out
    assert b"nope" not in out
    assert ws.subprotocol == "superchat"


def test_text_and_binary_messages() -> None:
    ws = opened()
    events, out, eof = ws.receive_data(
        frame(Opcode.TEXT, "héllo".encode()) + frame(Opcode.BINARY, b"\x00\x01")
    )
    assert [type(e) for e in events] == [WebSocketMessage, WebSocketMessage]
    assert [e.data for e in events if isinstance(e, WebSocketMessage)] == ["héllo", b"\x00\x01"]
    assert (out, eof) == (b"", False)


def test_fragmented_text_is_reassembled_even_when_utf8_spans_fragments() -> None:
    ws = opened()
    encoded = "añb€".encode()
    data = (
        frame(Opcode.TEXT, encoded[:2], fin=False)
        + frame(Opcode.PING, b"p")  # control frames may be interleaved
        + frame(Opcode.CONT, encoded[2:5], fin=False)
        + frame(Opcode.CONT, encoded[5:], fin=True)
    )
    events, out, _ = ws.receive_data(data)
    assert [e.data for e in events if isinstance(e, WebSocketMessage)] == ["añb€"]
    assert [f.opcode for f in server_frames(out)] == [Opcode.PONG]


def test_invalid_utf8_closes_with_1007() -> None:
    ws = opened()
    events, out, eof = ws.receive_data(frame(Opcode.TEXT, b"\xff\xfe"))
    assert isinstance(events[-1], WebSocketClosed)
    assert events[-1].code == 1007
    assert Close.parse(server_frames(out)[0].data).code == 1007
    assert eof


def test_invalid_utf8_in_a_fragment_fails_fast() -> None:
    ws = opened()
    events, _, _ = ws.receive_data(frame(Opcode.TEXT, b"ok\xc0\xaf", fin=False))
    assert isinstance(events[-1], WebSocketClosed)
    assert events[-1].code == 1007


def test_message_over_max_size_closes_with_1009() -> None:
    ws = opened(max_size=10)
    events, out, eof = ws.receive_data(frame(Opcode.BINARY, b"x" * 11))
    assert isinstance(events[-1], WebSocketClosed)
    assert events[-1].code == 1009
    assert Close.parse(server_frames(out)[0].data).code == 1009
    assert eof


def test_fragmented_message_over_max_size_closes_with_1009() -> None:
    ws = opened(max_size=10)
    data = frame(Opcode.BINARY, b"x" * 6, fin=False) + frame(Opcode.CONT, b"x" * 6)
    events, _, _ = ws.receive_data(data)
    assert isinstance(events[-1], WebSocketClosed)
    assert events[-1].code == 1009


@pytest.mark.parametrize(
    "data",
    [
        frame(Opcode.CONT, b"orphan continuation"),
        Frame(Opcode.TEXT, b"unmasked").serialize(mask=False, extensions=[]),
        # A ping of 126 bytes: control frames are at most 125 (RFC 6455 §5.5). Built by
        # hand (zero mask) because the library refuses to serialise it.
        b"\x89\xfe\x00\x7e\x00\x00\x00\x00" + b"x" * 126,
        frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.TEXT, b"b"),
    ],
)
def test_protocol_errors_close_with_1002(data: bytes) -> None:
    ws = opened()
    events, _, eof = ws.receive_data(data)
    assert isinstance(events[-1], WebSocketClosed)
    assert events[-1].code == 1002
    assert eof


def test_client_close_is_echoed_with_code_and_reason() -> None:
    ws = opened()
    events, out, eof = ws.receive_data(frame(Opcode.CLOSE, Close(4001, "bye").serialize()))
    assert [(e.code, e.reason) for e in events if isinstance(e, WebSocketClosed)] == [(4001, "bye")]
    close = Close.parse(server_frames(out)[0].data)
    assert (close.code, close.reason) == (4001, "bye")
    assert eof


def test_server_close_then_client_answer() -> None:
    ws = opened()
    out, eof = ws.send_close(1012, "restart")
    assert Close.parse(server_frames(out)[0].data).code == 1012
    assert not eof and not ws.open
    events, _, eof = ws.receive_data(frame(Opcode.CLOSE, Close(1012, "").serialize()))
    assert isinstance(events[0], WebSocketClosed)
    assert eof


def test_ping_and_pong() -> None:
    ws = opened()
    out = ws.send_ping(b"k")
    assert server_frames(out)[0].opcode is Opcode.PING
    events, _, _ = ws.receive_data(frame(Opcode.PONG, b"k"))
    assert events == [WebSocketPong()] or isinstance(events[0], WebSocketPong)


def test_lost_connection_reports_1006() -> None:
    ws = opened()
    events, _, _ = ws.receive_eof()
    assert isinstance(events[0], WebSocketClosed)
    assert events[0].code == 1006


def test_a_subprotocol_offered_but_not_chosen_is_not_sent() -> None:
    ws = WebSocketConnection()
    out, status = ws.accept("/", [*HEADERS, (b"sec-websocket-protocol", b"chat")])
    assert status == 101
    assert b"Sec-WebSocket-Protocol" not in out
    assert ws.subprotocol is None


def test_receive_messages_gives_each_message_as_its_data() -> None:
    ws = opened()
    data = frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.CONT, b"b")
    assert ws.receive_messages(frame(Opcode.TEXT, "é".encode())) == (["é"], b"", False)
    assert ws.receive_messages(frame(Opcode.BINARY, b"\x01")) == ([b"\x01"], b"", False)
    assert ws.receive_messages(data + frame(Opcode.BINARY, b"")) == (["ab", b""], b"", False)
    # Invalid UTF-8 in a one-frame message leaves the short way and fails the connection.
    events, out, eof = ws.receive_messages(frame(Opcode.TEXT, b"\xff"))
    assert [type(e) for e in events] == [WebSocketClosed] and eof
    assert isinstance(events[0], WebSocketClosed) and events[0].code == 1007
    assert Close.parse(server_frames(out)[0].data).code == 1007


def test_send_message_frames() -> None:
    ws = opened()
    frames = server_frames(ws.send_message("hi") + ws.send_message(b"\x01"))
    assert [(f.opcode, bytes(f.data)) for f in frames] == [
        (Opcode.TEXT, b"hi"),
        (Opcode.BINARY, b"\x01"),
    ]


def test_queued_messages_leave_in_order_with_other_output() -> None:
    ws = opened()
    assert ws.queue_message("one") and ws.queue_message(b"\x02")
    # A ping arriving meanwhile: its pong is written after the queued messages, not before.
    _, out, _ = ws.receive_data(frame(Opcode.PING, b"p"))
    assert ws.queue_message("three")
    queued, eof = ws.output()
    assert not eof
    assert [(f.opcode, bytes(f.data)) for f in server_frames(out + queued)] == [
        (Opcode.TEXT, b"one"),
        (Opcode.BINARY, b"\x02"),
        (Opcode.PONG, b"p"),
        (Opcode.TEXT, b"three"),
    ]
    assert ws.output() == (b"", False)


def test_queue_message_refuses_once_closing() -> None:
    ws = opened()
    ws.send_close(1000, "bye")
    assert ws.queue_message("late") is False
    assert ws.output() == (b"", False)
    assert WebSocketConnection().queue_message("before accept") is False


def test_compression_negotiated_only_when_enabled() -> None:
    offer = [*HEADERS, (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits")]
    out, _ = WebSocketConnection().accept("/", offer)
    assert b"permessage-deflate" not in out
    ws = WebSocketConnection(compression=True)
    out, _ = ws.accept("/", offer)
    assert b"Sec-WebSocket-Extensions: permessage-deflate" in out


@pytest.mark.parametrize(
    ("method", "headers", "problem"),
    [
        ("POST", HEADERS, "needs GET"),
        ("GET", [h for h in HEADERS if h[0] != b"sec-websocket-key"], "Sec-WebSocket-Key"),
        ("GET", [*HEADERS[:-1], (b"sec-websocket-version", b"8")], "Version"),
    ],
)
def test_handshake_problems(method: str, headers: list[tuple[bytes, bytes]], problem: str) -> None:
    found = handshake_problem(method, headers)
    assert found is not None and problem in found
    assert handshake_problem("GET", HEADERS) is None


def test_close_between_fragments_is_answered_normally() -> None:
    # Autobahn 7.1.5: fragment, Close 1000, fragment: a clean 1000 close, message dropped.
    ws = opened()
    data = (
        frame(Opcode.TEXT, b"fragment1", fin=False)
        + frame(Opcode.CLOSE, Close(1000, "").serialize())
        + frame(Opcode.CONT, b"fragment2")
    )
    events, out, eof = ws.receive_data(data)
    assert [type(e) for e in events] == [WebSocketClosed]
    assert isinstance(events[0], WebSocketClosed) and events[0].code == 1000
    assert Close.parse(server_frames(out)[0].data).code == 1000
    assert eof
