"""WebSocket consumers: dispatch, groups, accept/close, errors, the disconnect deadline."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from kanal.consumers import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    DenyConnection,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from kanal.layers import InMemoryChannelLayer
from kanal.testing import WebsocketCommunicator


class Echo(AsyncWebsocketConsumer):
    """Echoes frames; tells the client its channel name; relays chat.message events."""

    groups = ["room"]

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "boom":
            raise RuntimeError("the handler broke")
        if text_data is not None:
            await self.send(text_data=f"echo:{text_data}")
        else:
            await self.send(bytes_data=bytes_data)

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=f"chat:{event['text']}")


async def open_echo(layer: InMemoryChannelLayer, cls: type = Echo) -> tuple[Any, str]:
    communicator = WebsocketCommunicator(cls.as_asgi(channel_layer=layer), "/ws/")
    connected, _ = await communicator.connect()
    assert connected
    channel_name = await communicator.receive_from()
    assert isinstance(channel_name, str)
    return communicator, channel_name


async def test_text_and_bytes_frames_and_layer_messages(
    channel_layer: InMemoryChannelLayer,
) -> None:
    communicator, channel_name = await open_echo(channel_layer)
    assert channel_name.startswith("specific.")
    await communicator.send_to(text_data="hi")
    assert await communicator.receive_from() == "echo:hi"
    await communicator.send_to(bytes_data=b"\x00\x01")
    assert await communicator.receive_from() == b"\x00\x01"
    await channel_layer.send(channel_name, {"type": "chat.message", "text": "direct"})
    assert await communicator.receive_from() == "chat:direct"
    await communicator.disconnect()


async def test_groups_joined_on_connect_and_left_on_disconnect(
    channel_layer: InMemoryChannelLayer,
) -> None:
    first, _ = await open_echo(channel_layer)
    second, _ = await open_echo(channel_layer)
    await channel_layer.group_send("room", {"type": "chat.message", "text": "all"})
    assert await first.receive_from() == "chat:all"
    assert await second.receive_from() == "chat:all"
    await first.disconnect()
    before = channel_layer.stats().groups["room"].delivered
    await channel_layer.group_send("room", {"type": "chat.message", "text": "one"})
    assert channel_layer.stats().groups["room"].delivered == before + 1
    assert await second.receive_from() == "chat:one"
    await second.disconnect()


async def test_accept_with_subprotocol_and_headers_then_close_with_code() -> None:
    class Picky(AsyncWebsocketConsumer):
        uses_channel_layer = False

        async def connect(self) -> None:
            assert self.scope["subprotocols"] == ["v1", "v2"]
            await self.accept("v2", headers=[("x-room", "lobby")])

        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            await self.close(code=4001, reason="bye")

    communicator = WebsocketCommunicator(Picky.as_asgi(), "/", subprotocols=["v1", "v2"])
    assert await communicator.connect() == (True, "v2")
    assert (b"x-room", b"lobby") in communicator.response_headers
    await communicator.send_to(text_data="x")
    assert await communicator.receive_close() == (4001, "bye")
    await communicator.disconnect(4001)


async def test_deny_connection_refuses_the_handshake() -> None:
    class Refuse(AsyncWebsocketConsumer):
        uses_channel_layer = False

        async def connect(self) -> None:
            raise DenyConnection

    communicator = WebsocketCommunicator(Refuse.as_asgi(), "/")
    connected, _ = await communicator.connect()
    assert connected is False


@pytest.mark.parametrize(
    ("message", "named"),
    [
        ({"type": "no.such.thing"}, "no_such_thing"),
        ({"text": "no type"}, "no 'type'"),
        ({"type": "close"}, "'close'"),
    ],
)
async def test_bad_layer_message_closes_only_that_connection_with_1011(
    channel_layer: InMemoryChannelLayer,
    caplog: pytest.LogCaptureFixture,
    message: dict[str, Any],
    named: str,
) -> None:
    victim, victim_channel = await open_echo(channel_layer)
    bystander, _ = await open_echo(channel_layer)
    with caplog.at_level(logging.ERROR, logger="kanal.consumers"):
        await channel_layer.send(victim_channel, message)
        code, _ = await victim.receive_close()
    assert code == 1011
    assert "Echo" in caplog.text and named in caplog.text
    await victim.wait()
    # The other connection still works, and the victim left the group.
    await bystander.send_to(text_data="still here")
    assert await bystander.receive_from() == "echo:still here"
    await channel_layer.group_send("room", {"type": "chat.message", "text": "after"})
    assert await bystander.receive_from() == "chat:after"
    assert channel_layer.stats().groups["room"].delivered == 1
    await bystander.disconnect()


async def test_raising_handler_closes_with_1011_and_logs_traceback(
    channel_layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    communicator, _ = await open_echo(channel_layer)
    with caplog.at_level(logging.ERROR, logger="kanal.consumers"):
        await communicator.send_to(text_data="boom")
        code, _reason = await communicator.receive_close()
    assert code == 1011
    assert "Echo failed on message type 'websocket.receive': the handler broke" in caplog.text
    assert "RuntimeError" in caplog.text  # the traceback is logged
    await communicator.wait()


async def test_json_consumer_round_trip_and_invalid_json_closes_1007() -> None:
    class Json(AsyncJsonWebsocketConsumer):
        uses_channel_layer = False

        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            await self.send_json({"got": content})

    communicator = WebsocketCommunicator(Json.as_asgi(), "/")
    await communicator.connect()
    await communicator.send_json_to({"a": [1, 2]})
    assert await communicator.receive_json_from() == {"got": {"a": [1, 2]}}
    await communicator.send_to(text_data="{not json")
    code, _ = await communicator.receive_close()
    assert code == 1007
    await communicator.wait()


async def test_stuck_async_disconnect_is_cancelled_and_logged_with_its_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    never = asyncio.Event()

    class Stuck(AsyncWebsocketConsumer):
        uses_channel_layer = False
        disconnect_timeout = 0.2

        async def disconnect(self, code: int) -> None:
            await self.save_state_forever()

        async def save_state_forever(self) -> None:
            await never.wait()

    communicator = WebsocketCommunicator(Stuck.as_asgi(), "/")
    await communicator.connect()
    with caplog.at_level(logging.ERROR, logger="kanal.consumers"):
        await communicator.disconnect(timeout=3)
    assert "Stuck.disconnect() did not finish within 0.2 s and was cancelled" in caplog.text
    assert "save_state_forever" in caplog.text


async def test_stuck_sync_disconnect_is_logged_with_the_threads_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    class StuckSync(WebsocketConsumer):
        uses_channel_layer = False
        disconnect_timeout = 0.2

        def disconnect(self, code: int) -> None:
            self.slow_database_call()

        def slow_database_call(self) -> None:
            release.wait(10)

    communicator = WebsocketCommunicator(StuckSync.as_asgi(), "/")
    await communicator.connect()
    try:
        with caplog.at_level(logging.ERROR, logger="kanal.consumers"):
            await communicator.disconnect(timeout=3)
    finally:
        release.set()
    assert "StuckSync.disconnect() did not finish" in caplog.text
    assert "slow_database_call" in caplog.text and "worker thread" in caplog.text


async def test_sync_consumer_blocked_in_a_handler_does_not_block_others(
    channel_layer: InMemoryChannelLayer,
) -> None:
    release = threading.Event()
    entered = threading.Event()

    class SyncEcho(JsonWebsocketConsumer):
        groups = ["sync-room"]

        def receive_json(self, content: Any, **kwargs: Any) -> None:
            if content.get("block"):
                entered.set()
                release.wait(10)
            self.send_json({"echo": content, "thread": threading.current_thread().name})

        def chat_message(self, event: dict[str, Any]) -> None:
            async_to_sync(self.channel_layer.group_send)(  # type: ignore[union-attr]
                "sync-room", {"type": "chat.relayed", "text": event["text"]}
            )

        def chat_relayed(self, event: dict[str, Any]) -> None:
            self.send_json({"relayed": event["text"]})

    app = SyncEcho.as_asgi(channel_layer=channel_layer)
    blocked = WebsocketCommunicator(app, "/")
    free = WebsocketCommunicator(app, "/")
    assert (await blocked.connect())[0] and (await free.connect())[0]
    try:
        await blocked.send_json_to({"block": True})
        assert await asyncio.to_thread(entered.wait, 5)
        await free.send_json_to({"n": 1})
        reply = await free.receive_json_from(timeout=3)
        assert reply["echo"] == {"n": 1}
        assert reply["thread"].startswith("kanal-sync")
    finally:
        release.set()
    assert (await blocked.receive_json_from(timeout=3))["echo"] == {"block": True}
    await channel_layer.group_send("sync-room", {"type": "chat.message", "text": "x"})
    # Each member relays once to the whole group: each connection sees two relays.
    for communicator in (blocked, free):
        assert await communicator.receive_json_from() == {"relayed": "x"}
        assert await communicator.receive_json_from() == {"relayed": "x"}
    await blocked.disconnect()
    await free.disconnect()


def test_as_asgi_rejects_unknown_attributes() -> None:
    with pytest.raises(TypeError, match="'grups', which is not an attribute of Echo"):
        Echo.as_asgi(grups=["x"])


async def test_send_to_a_vanished_client_is_not_an_error(
    channel_layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    """A layer message racing the disconnect: the server's send raises; no error is logged."""
    codes: list[int] = []

    class Mourner(Echo):
        async def disconnect(self, code: int) -> None:
            codes.append(code)

    sent: list[dict[str, Any]] = []
    gone = asyncio.Event()
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send(message: dict[str, Any]) -> None:
        if gone.is_set():
            raise ConnectionResetError("the client is gone")
        sent.append(message)
        if len(sent) == 2:  # accept, then the channel name
            greeted.set()

    greeted = asyncio.Event()
    app = Mourner.as_asgi(channel_layer=channel_layer)
    task = asyncio.ensure_future(app({"type": "websocket", "path": "/"}, incoming.get, send))
    await incoming.put({"type": "websocket.connect"})
    await asyncio.wait_for(greeted.wait(), 2)
    gone.set()
    with caplog.at_level(logging.DEBUG, logger="kanal.consumers"):
        await channel_layer.group_send("room", {"type": "chat.message", "text": "late"})
        await asyncio.wait_for(task, 2)
    assert codes == [1006]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "went away" in caplog.text
    await channel_layer.group_send("room", {"type": "chat.message", "text": "later"})
    assert channel_layer.stats().groups["room"].delivered == 1


async def test_group_membership_is_renewed_while_connected_and_left_after() -> None:
    """A connection outliving group_expiry stays in its groups (Channels' drop it silently)."""
    adds: list[str] = []
    renewed_twice = asyncio.Event()

    class CountingLayer(InMemoryChannelLayer):
        async def group_add(self, group: str, channel: str) -> None:
            await super().group_add(group, channel)
            adds.append(group)
            if len(adds) >= 3:  # the join, then two renewals: past the first expiry
                renewed_twice.set()

    layer = CountingLayer(group_expiry=0.2)
    communicator, _ = await open_echo(layer)
    await asyncio.wait_for(renewed_twice.wait(), 5)
    await layer.group_send("room", {"type": "chat.message", "text": "still a member"})
    assert await communicator.receive_from() == "chat:still a member"
    await communicator.disconnect()
    count = len(adds)
    await layer.group_send("room", {"type": "chat.message", "text": "gone"})
    assert layer.stats().groups["room"].delivered == 1
    assert len(adds) == count  # the renewal stopped with the consumer


async def test_layer_failure_closes_the_connection_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer = InMemoryChannelLayer()
    communicator, _ = await open_echo(layer)
    with caplog.at_level(logging.ERROR, logger="kanal.consumers"):
        await layer.close()
        code, _ = await communicator.receive_close()
    assert code == 1011
    assert "Echo failed on message type 'layer.receive'" in caplog.text
    await communicator.wait()


async def test_leaving_groups_on_a_hanging_layer_is_bounded_by_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Leaving the groups is part of disconnect handling and keeps its deadline."""
    never = asyncio.Event()
    disconnected: list[int] = []

    class HangingLayer(InMemoryChannelLayer):
        async def group_discard(self, group: str, channel: str) -> None:
            await never.wait()

    class Member(Echo):
        disconnect_timeout = 0.2

        async def disconnect(self, code: int) -> None:
            disconnected.append(code)

    layer = HangingLayer()
    communicator = WebsocketCommunicator(Member.as_asgi(channel_layer=layer), "/ws/")
    assert (await communicator.connect())[0]
    with caplog.at_level(logging.ERROR, logger="kanal.consumers"):
        await communicator.disconnect(timeout=3)
    assert disconnected == [1000]  # disconnect() still ran, after the abandoned leave
    assert "leaving groups ['room'] did not finish within 0.2 s" in caplog.text
    await layer.close()


class Numbered(AsyncWebsocketConsumer):
    """Reports every layer message's number and echoes client frames; 'stop' fails."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"client:{text_data}")

    async def number(self, event: dict[str, Any]) -> None:
        if event["n"] == "stop":
            raise RuntimeError("stop here")
        await self.send(text_data=f"n:{event['n']}")


async def test_a_backlog_is_handled_in_order_and_the_client_is_not_starved() -> None:
    from kanal.consumers._base import _BATCH

    channel_layer = InMemoryChannelLayer(capacity=1000)
    communicator, channel_name = await open_echo(channel_layer, Numbered)
    backlog = 3 * _BATCH
    for n in range(backlog):
        await channel_layer.send(channel_name, {"type": "number", "n": n})
    await communicator.send_to(text_data="hello")
    received = [await communicator.receive_from() for _ in range(backlog + 1)]
    numbers = [int(text[2:]) for text in received if text.startswith("n:")]
    assert numbers == list(range(backlog))
    # The backlog is taken in bounded batches: the client's frame is answered before it
    # has all been handled, not after.
    assert received.index("client:hello") <= _BATCH + 1
    await communicator.disconnect()
    await channel_layer.close()


async def test_a_failure_inside_a_batch_stops_the_batch_and_closes_1011(
    channel_layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    communicator, channel_name = await open_echo(channel_layer, Numbered)
    for n in [0, 1, "stop", 3, 4]:
        await channel_layer.send(channel_name, {"type": "number", "n": n})
    with caplog.at_level(logging.ERROR, logger="kanal.consumers"):
        assert await communicator.receive_from() == "n:0"
        assert await communicator.receive_from() == "n:1"
        closed = await communicator.receive_output()
    assert closed["type"] == "websocket.close" and closed["code"] == 1011
    assert "Numbered failed on message type 'number'" in caplog.text
    await communicator.wait()
    # What came after the failure was not handled: the closed connection's channel was
    # discarded with it, and those two messages are counted as discarded, not received.
    stats = channel_layer.stats()
    assert stats.discarded == 2
    assert stats.channels[channel_name].received == 3
    assert channel_layer.receive_nowait(channel_name) is None


async def test_an_undecodable_message_inside_a_batch_fails_like_any_other() -> None:
    """A message the layer cannot decode (say, another encryption key) closes with 1011
    and runs disconnect(), whether it arrives alone or in the middle of a backlog."""
    from kanal.exceptions import InvalidMessage

    disconnects: list[int] = []

    class Counting(Numbered):
        async def disconnect(self, code: int) -> None:
            disconnects.append(code)

    layer = InMemoryChannelLayer()
    decode = layer.codec.decode

    def refusing(data: bytes) -> dict[str, Any]:
        message = decode(data)
        if message.get("n") == "garbled":
            raise InvalidMessage("a received message cannot be decrypted")
        return message

    layer.codec.decode = refusing  # type: ignore[method-assign]
    communicator, channel_name = await open_echo(layer, Counting)
    await layer.send(channel_name, {"type": "number", "n": 0})
    await layer.send(channel_name, {"type": "number", "n": "garbled"})  # taken in the batch
    assert await communicator.receive_from() == "n:0"
    closed = await communicator.receive_output()
    assert closed["type"] == "websocket.close" and closed["code"] == 1011
    await communicator.wait()
    assert disconnects == [1011]
    await layer.close()


async def test_handler_lookup_is_remembered_per_class_and_never_reaches_the_api(
    channel_layer: InMemoryChannelLayer,
) -> None:
    class Base(AsyncWebsocketConsumer):
        async def connect(self) -> None:
            await self.accept()
            await self.send(text_data=self.channel_name)

        async def note(self, event: dict[str, Any]) -> None:
            await self.send(text_data="base")

    class Child(Base):
        async def note(self, event: dict[str, Any]) -> None:
            await self.send(text_data="child")

    for cls, expected in [(Base, "base"), (Child, "child"), (Base, "base")]:
        communicator, channel_name = await open_echo(channel_layer, cls)
        for _ in range(2):  # the second one takes the remembered name
            await channel_layer.send(channel_name, {"type": "note"})
            assert await communicator.receive_from() == expected
        await communicator.disconnect()
    # "close" names an API method, not a handler, and a list is no type at all: refused
    # (NoHandler, 1011), however many types came before.
    for bad in ("close", ["note"]):
        communicator, channel_name = await open_echo(channel_layer, Base)
        await channel_layer.send(channel_name, {"type": bad})
        closed = await communicator.receive_output()
        assert closed["type"] == "websocket.close" and closed["code"] == 1011
        await communicator.wait()


class TextOnly(AsyncWebsocketConsumer):
    """The Channels tutorial's shape: ``receive(self, text_data)``, no ``bytes_data``."""

    uses_channel_layer = False

    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str) -> None:  # type: ignore[override]
        await self.send(text_data=text_data.upper())


class BytesOnly(WebsocketConsumer):
    uses_channel_layer = False

    def connect(self) -> None:
        self.accept()

    def receive(self, bytes_data: bytes) -> None:  # type: ignore[override]
        self.send(bytes_data=bytes_data[::-1])


async def test_receive_gets_its_frame_by_keyword_as_channels_passes_it() -> None:
    text = WebsocketCommunicator(TextOnly.as_asgi(), "/")
    assert (await text.connect())[0]
    await text.send_to(text_data="hello")
    assert await text.receive_from() == "HELLO"
    await text.disconnect()
    data = WebsocketCommunicator(BytesOnly.as_asgi(), "/")
    assert (await data.connect())[0]
    await data.send_to(bytes_data=b"abc")
    assert await data.receive_from() == b"cba"
    await data.disconnect()
