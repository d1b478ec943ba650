"""The ASGI WebSocket session: client bytes and app messages in, events and bytes out.

No socket, no loop: each test drives a :class:`WebSocketSession` as the server would and
reads what it produced.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.protocols.test_websocket import HEADERS, server_frames
from websockets.frames import Close, Frame, Opcode

from kanal.exceptions import ASGIMessageError, ClientDisconnected, KanalError
from kanal.protocols import (
    RequestStart,
    WebSocketAction,
    WebSocketConnection,
    WebSocketSession,
    WebSocketState,
)
from kanal.protocols._frames import message_frame
from kanal.protocols._websocket_state import TRANSITIONS, Refusal

MESSAGE_TYPES = [
    "websocket.accept",
    "websocket.send",
    "websocket.close",
    "websocket.http.response.start",
    "websocket.http.response.body",
    "kanal.group.subscribe",
    "kanal.group.unsubscribe",
]


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True, extensions=[])


def session(
    extra_headers: list[tuple[bytes, bytes]] | None = None, **kwargs: Any
) -> WebSocketSession:
    request = RequestStart(
        "GET",
        "1.1",
        b"/chat",
        "/chat",
        b"",
        [*HEADERS, *(extra_headers or [])],
        True,
        False,
        b"websocket",
    )
    return WebSocketSession(request, **kwargs)


def events(ws: WebSocketSession) -> list[dict[str, Any]]:
    """Every event the app would receive now (a disconnect once, although it repeats)."""
    found: list[dict[str, Any]] = []
    while (event := ws.next_event()) is not None:
        found.append(event)
        if event["type"] == "websocket.disconnect":
            break
    return found


def opened(**kwargs: Any) -> WebSocketSession:
    ws = session(**kwargs)
    assert events(ws) == [{"type": "websocket.connect"}]
    assert ws.send({"type": "websocket.accept"}) is WebSocketAction.ACCEPT
    out, close = ws.data_to_send()
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in out
    assert not close
    assert ws.state is WebSocketState.OPEN
    return ws


def in_state(state: WebSocketState) -> WebSocketSession:
    """A session driven into ``state`` the way a client and an app would."""
    if state is WebSocketState.CONNECTING:
        return session()
    if state is WebSocketState.DENYING:
        ws = session()
        ws.send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        return ws
    if state is WebSocketState.DENIED:
        ws = session()
        ws.send({"type": "websocket.close"})
        return ws
    ws = opened()
    if state is WebSocketState.CLOSING:
        ws.send({"type": "websocket.close", "code": 4000})
    elif state is WebSocketState.CLOSED:
        ws.receive_data(masked(Opcode.CLOSE, Close(1000, "").serialize()))
    assert ws.state is state
    return ws


def test_messages_both_ways() -> None:
    ws = opened()
    ws.receive_data(masked(Opcode.TEXT, "héllo".encode()) + masked(Opcode.BINARY, b"\x01\x02"))
    assert ws.queued_bytes == 5 + 2
    assert events(ws) == [
        {"type": "websocket.receive", "text": "héllo"},
        {"type": "websocket.receive", "bytes": b"\x01\x02"},
    ]
    assert ws.queued_bytes == 0
    assert ws.send({"type": "websocket.send", "text": "back"}) is WebSocketAction.SEND
    assert ws.send({"type": "websocket.send", "bytes": b"\x03"}) is WebSocketAction.SEND
    out, close = ws.data_to_send()
    assert [(f.opcode, bytes(f.data)) for f in server_frames(out)] == [
        (Opcode.TEXT, b"back"),
        (Opcode.BINARY, b"\x03"),
    ]
    assert not close
    assert ws.data_to_send() == (b"", False)


def test_receive_data_returns_the_messages_it_queued() -> None:
    ws = opened()
    assert ws.receive_data(masked(Opcode.TEXT, b"one")) == 1  # the one-frame read
    assert ws.receive_data(masked(Opcode.TEXT, b"a", fin=False)) == 0
    assert ws.receive_data(masked(Opcode.CONT, b"b") + masked(Opcode.BINARY, b"\x00")) == 2
    assert ws.receive_data(masked(Opcode.PING, b"p")) == 0
    assert [e.get("text", e.get("bytes")) for e in events(ws)] == ["one", "ab", b"\x00"]


def test_idle_sessions_share_one_empty_queue_and_keep_their_events_apart() -> None:
    # An idle WebSocket holds no event queue of its own (memory per idle connection).
    one, two = opened(), opened()
    assert one.events is two.events and not one.events
    one.receive_data(masked(Opcode.TEXT, b"for one"))
    assert one.events is not two.events and not two.events
    assert events(one) == [{"type": "websocket.receive", "text": "for one"}]
    assert events(two) == []
    two.receive_data(masked(Opcode.CLOSE, Close(1000, "").serialize()))
    assert one.events is not two.events and not one.events
    assert [e["type"] for e in events(two)] == ["websocket.disconnect"]
    assert [e["type"] for e in events(two)] == ["websocket.disconnect"]  # it repeats
    with pytest.raises(AssertionError):
        one.events.append({"type": "websocket.receive", "text": "into every session"})


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
@pytest.mark.parametrize("compression", [False, True])
def test_sent_messages_are_the_frames_the_library_builds(size: int, compression: bool) -> None:
    # Without compression the session frames messages itself (message_frame); the bytes
    # must be the library's own. With permessage-deflate negotiated the library frames
    # them, compressed (RSV1).
    offer = [(b"sec-websocket-extensions", b"permessage-deflate")] if compression else []
    ws = opened(extra_headers=offer, compression=compression)
    assert ws.ws.plain_frames is not compression
    text, data = "é" * (size // 2) + "a" * (size % 2), (bytes(range(256)) * 257)[:size]
    ws.send({"type": "websocket.send", "text": text})
    ws.send({"type": "websocket.send", "bytes": data})
    out, _ = ws.data_to_send()
    if compression:
        from websockets.client import ClientProtocol
        from websockets.extensions.permessage_deflate import PerMessageDeflate
        from websockets.protocol import State
        from websockets.uri import parse_uri

        client = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN)
        client.extensions = [PerMessageDeflate(False, False, 15, 15)]
        client.receive_data(out)
        frames = [e for e in client.events_received() if isinstance(e, Frame)]
        assert out[0] & 0x40  # RSV1: compressed
    else:
        library = WebSocketConnection()
        library.accept("/", HEADERS)
        assert out == library.send_message(text) + library.send_message(data)
        frames = server_frames(out)
    assert [(f.opcode, bytes(f.data)) for f in frames] == [
        (Opcode.TEXT, text.encode()),
        (Opcode.BINARY, data),
    ]


def test_data_before_the_accept_is_held_and_read_once_accepted() -> None:
    ws = session()
    early = masked(Opcode.TEXT, b"early") + masked(Opcode.PING, b"p")
    ws.receive_data(early)
    assert ws.pending_bytes == len(early)
    assert events(ws) == [{"type": "websocket.connect"}]
    assert ws.data_to_send() == (b"", False)  # nothing is answered before the 101
    ws.send({"type": "websocket.accept"})
    assert ws.pending_bytes == 0
    assert events(ws) == [{"type": "websocket.receive", "text": "early"}]
    out, _ = ws.data_to_send()
    head, _, frames = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert [f.opcode for f in server_frames(frames)] == [Opcode.PONG]  # after the 101


def test_close_before_accept_is_a_403_and_the_held_data_is_dropped() -> None:
    ws = session()
    ws.receive_data(masked(Opcode.TEXT, b"never read"))
    assert ws.send({"type": "websocket.close"}) is WebSocketAction.REJECT
    out, close = ws.data_to_send()
    assert out.startswith(b"HTTP/1.1 403 ")
    assert close
    assert (ws.state, ws.status, ws.pending_bytes) == (WebSocketState.DENIED, 403, 0)


def test_denial_response_in_pieces() -> None:
    ws = session()
    action = ws.send(
        {"type": "websocket.http.response.start", "status": 401, "headers": [(b"x-why", b"no")]},
        b"date: today\r\n",
    )
    assert action is WebSocketAction.START_DENIAL
    assert ws.status == 401
    ws.send({"type": "websocket.http.response.body", "body": b"log ", "more_body": True})
    assert ws.state is WebSocketState.DENYING
    ws.send({"type": "websocket.http.response.body", "body": b"in"})
    assert ws.state is WebSocketState.DENIED
    out, close = ws.data_to_send()
    assert out.startswith(b"HTTP/1.1 401 ")
    assert b"date: today\r\n" in out and b"x-why: no\r\n" in out
    assert out.endswith(b"log \r\n2\r\nin\r\n0\r\n\r\n")
    assert close


def test_client_close_is_echoed_and_the_disconnect_repeats() -> None:
    ws = opened()
    ws.receive_data(masked(Opcode.CLOSE, Close(4001, "bye").serialize()))
    assert ws.state is WebSocketState.CLOSED
    disconnect = {"type": "websocket.disconnect", "code": 4001, "reason": "bye"}
    assert ws.next_event() == disconnect
    assert ws.next_event() == disconnect  # every later receive() sees it too
    out, close = ws.data_to_send()
    echoed = Close.parse(server_frames(out)[0].data)
    assert (echoed.code, echoed.reason, close) == (4001, "bye", True)
    with pytest.raises(ClientDisconnected):
        ws.send({"type": "websocket.send", "text": "too late"})
    assert ws.send({"type": "websocket.close"}) is WebSocketAction.IGNORE


def test_app_close_waits_for_the_client_answer() -> None:
    ws = opened()
    assert (
        ws.send({"type": "websocket.close", "code": 4000, "reason": "done"})
        is WebSocketAction.CLOSE
    )
    out, close = ws.data_to_send()
    assert Close.parse(server_frames(out)[0].data).code == 4000
    assert not close and ws.state is WebSocketState.CLOSING
    with pytest.raises(ClientDisconnected):
        ws.send({"type": "websocket.send", "text": "after the close"})
    ws.receive_data(masked(Opcode.CLOSE, Close(4000, "").serialize()))
    assert ws.state is WebSocketState.CLOSED
    assert events(ws)[-1]["code"] == 4000
    assert ws.data_to_send()[1]  # the transport closes now


def test_client_gone_before_the_accept() -> None:
    ws = session()
    ws.connection_lost()
    assert events(ws)[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    with pytest.raises(ClientDisconnected):
        ws.send({"type": "websocket.accept"})


def test_protocol_failures_are_reported_with_the_code_sent() -> None:
    ws = opened(max_size=10)
    ws.receive_data(masked(Opcode.BINARY, b"x" * 11))
    assert ws.failure == 1009
    assert events(ws)[-1]["code"] == 1009
    out, close = ws.data_to_send()
    assert Close.parse(server_frames(out)[0].data).code == 1009 and close
    ws = opened()
    ws.receive_data(masked(Opcode.TEXT, b"\xff"))
    assert ws.failure == 1007
    ws = opened()
    ws.receive_data(masked(Opcode.CLOSE, Close(1000, "").serialize()))
    assert ws.failure is None  # the client closed: no failure of ours


def test_keepalive_ping_and_pong() -> None:
    ws = opened()
    ws.ping()
    assert ws.awaiting_pong
    out, _ = ws.data_to_send()
    assert [f.opcode for f in server_frames(out)] == [Opcode.PING]
    ws.receive_data(masked(Opcode.PONG, b"kanal"))
    assert not ws.awaiting_pong
    assert events(ws) == []  # pongs are not the app's business


def test_keepalive_failure_and_shutdown_close() -> None:
    ws = opened()
    ws.fail(1011, "keepalive ping timeout")
    out, close = ws.data_to_send()
    assert Close.parse(server_frames(out)[0].data).code == 1011 and close
    assert events(ws)[-1]["code"] == 1011
    ws = opened()
    assert ws.close(1001, "server shutting down")
    assert ws.state is WebSocketState.CLOSING
    assert not ws.close(1001, "twice")


@pytest.mark.parametrize(
    ("state", "status", "action", "after", "written"),
    [
        (
            WebSocketState.CONNECTING,
            403,
            WebSocketAction.REJECT,
            WebSocketState.DENIED,
            b"HTTP/1.1 403 ",
        ),
        (
            WebSocketState.CONNECTING,
            500,
            WebSocketAction.REJECT,
            WebSocketState.DENIED,
            b"HTTP/1.1 500 ",
        ),
        (WebSocketState.OPEN, 500, WebSocketAction.CLOSE, WebSocketState.CLOSING, b"\x88"),
        (WebSocketState.DENYING, 500, WebSocketAction.IGNORE, WebSocketState.DENIED, b""),
        (WebSocketState.CLOSING, 500, WebSocketAction.IGNORE, WebSocketState.CLOSING, b""),
    ],
)
def test_finish_answers_what_the_app_left_unanswered(
    state: WebSocketState,
    status: int,
    action: WebSocketAction,
    after: WebSocketState,
    written: bytes,
) -> None:
    ws = in_state(state)
    ws.data_to_send()
    assert ws.finish(status, 1011, "internal error") is action
    assert ws.state is after
    out, close = ws.data_to_send()
    assert out.startswith(written)
    assert close is (after is not WebSocketState.CLOSING)


def test_every_state_names_every_message_type() -> None:
    assert set(TRANSITIONS) == set(WebSocketState)
    for state, row in TRANSITIONS.items():
        assert sorted(row) == sorted(MESSAGE_TYPES), state


@pytest.mark.parametrize("state", list(WebSocketState))
@pytest.mark.parametrize("kind", MESSAGE_TYPES)
def test_the_table_is_what_the_session_does(state: WebSocketState, kind: str) -> None:
    ws = in_state(state)
    message: dict[str, Any] = {
        "type": kind,
        "text": "x",
        "status": 401,
        "body": b"",
        "more_body": True,
        "group": "room",
    }
    entry = TRANSITIONS[state][kind]
    if isinstance(entry, Refusal):
        with pytest.raises(entry.error) as info:
            ws.send(message)
        assert isinstance(info.value, KanalError)
        assert "/chat" in str(info.value)
        assert ws.state is state  # a refused message changes nothing
    else:
        action, after = entry
        assert ws.send(message) is action
        assert ws.state is after


def test_unknown_message_types_and_bad_messages_are_asgi_errors() -> None:
    ws = opened()
    with pytest.raises(ASGIMessageError, match="unexpected ASGI message type"):
        ws.send({"type": "http.response.start"})
    with pytest.raises(ASGIMessageError, match="'text' or 'bytes'"):
        ws.send({"type": "websocket.send"})
    with pytest.raises(ASGIMessageError, match="invalid code"):
        ws.send({"type": "websocket.close", "code": 1005})
    with pytest.raises(ASGIMessageError, match="needs a 'group'"):
        ws.send({"type": "kanal.group.subscribe", "group": ""})
    with pytest.raises(ASGIMessageError, match="reason longer"):
        ws.send({"type": "websocket.close", "code": 1000, "reason": "é" * 62})
    assert ws.state is WebSocketState.OPEN
    ws = session([(b"sec-websocket-protocol", b"chat, v2")])
    assert ws.subprotocols == ["chat", "v2"]
    with pytest.raises(ASGIMessageError, match="not offered"):
        ws.send({"type": "websocket.accept", "subprotocol": "v3"})
    ws.send({"type": "websocket.accept", "subprotocol": "v2"})
    assert b"Sec-WebSocket-Protocol: v2\r\n" in ws.data_to_send()[0]


def test_a_handshake_the_library_refuses_is_answered_and_denied() -> None:
    request = RequestStart(
        "GET",
        "1.1",
        b"/",
        "/",
        b"",
        [(n, b"not base64!" if n == b"sec-websocket-key" else v) for n, v in HEADERS],
        True,
        False,
        b"websocket",
    )
    ws = WebSocketSession(request)
    assert ws.send({"type": "websocket.accept"}) is WebSocketAction.ACCEPT
    out, close = ws.data_to_send()
    assert out.startswith(b"HTTP/1.1 400 ") and close
    assert (ws.state, ws.status) == (WebSocketState.DENIED, 400)


def test_a_str_subclass_is_sent_as_text() -> None:
    class Label(str):
        pass

    assert message_frame(Label("hé")) == message_frame("hé") == b"\x81\x03h\xc3\xa9"


def test_the_shared_empty_event_queue_refuses_every_way_of_growing() -> None:
    from kanal.protocols._websocket_session import _IDLE

    event = {"type": "websocket.receive", "text": "x"}
    for grow in (
        lambda: _IDLE.append(event),
        lambda: _IDLE.appendleft(event),
        lambda: _IDLE.extend([event]),
        lambda: _IDLE.extendleft([event]),
        lambda: _IDLE.insert(0, event),
    ):
        with pytest.raises(AssertionError):
            grow()
    assert len(_IDLE) == 0
