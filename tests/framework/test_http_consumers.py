"""HTTP consumers: whole responses, long polling through the layer, server-sent events."""

from __future__ import annotations

import logging

import pytest

from kanal.consumers import AsyncHttpConsumer, AsyncSseConsumer, format_event
from kanal.layers import InMemoryChannelLayer
from kanal.testing import HttpCommunicator


class Hello(AsyncHttpConsumer):
    uses_channel_layer = False

    async def handle(self, body: bytes) -> None:
        name = self.scope["url_route"]["kwargs"]["name"] if "url_route" in self.scope else "you"
        await self.send_response(
            200,
            f"hello {name}, {len(body)} bytes".encode(),
            headers=[("content-type", "text/plain")],
        )


async def test_whole_response_with_body() -> None:
    communicator = HttpCommunicator(Hello.as_asgi(), "POST", "/", body=b"12345")
    response = await communicator.get_response()
    assert response["status"] == 200
    assert response["body"] == b"hello you, 5 bytes"
    assert (b"content-type", b"text/plain") in response["headers"]


async def test_body_over_the_limit_gets_413() -> None:
    communicator = HttpCommunicator(Hello.as_asgi(max_body_size=4), "POST", "/", body=b"12345")
    response = await communicator.get_response()
    assert response["status"] == 413


async def test_raising_handle_answers_500_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(AsyncHttpConsumer):
        uses_channel_layer = False

        async def handle(self, body: bytes) -> None:
            raise KeyError("missing")

    with caplog.at_level(logging.ERROR, logger="kanal.consumers"):
        response = await HttpCommunicator(Broken.as_asgi(), "GET", "/").get_response()
    assert response["status"] == 500
    assert "Broken failed on message type 'http.request'" in caplog.text


async def test_long_poll_finished_by_a_group_message(channel_layer: InMemoryChannelLayer) -> None:
    class LongPoll(AsyncHttpConsumer):
        groups = ["news"]

        async def handle(self, body: bytes) -> None:
            await self.send_headers(headers=[(b"content-type", b"text/plain")])
            await self.send_body(b"", more_body=True)

        async def news_item(self, event: dict[str, str]) -> None:
            await self.send_body(event["text"].encode())

    communicator = HttpCommunicator(LongPoll.as_asgi(channel_layer=channel_layer), "GET", "/")
    start = await communicator.receive_start()
    assert start["status"] == 200
    assert (await communicator.receive_body_chunk())["more_body"] is True
    await channel_layer.group_send("news", {"type": "news.item", "text": "flash"})
    last = await communicator.receive_body_chunk()
    assert last["body"] == b"flash" and not last.get("more_body")
    await communicator.wait()
    # The group was left when the response ended.
    await channel_layer.group_send("news", {"type": "news.item", "text": "later"})
    assert channel_layer.stats().groups["news"].delivered == 1


async def test_server_sent_events_stream(channel_layer: InMemoryChannelLayer) -> None:
    class Feed(AsyncSseConsumer):
        groups = ["feed"]
        retry = 1500

        async def connect(self) -> None:
            await self.send_event(f"since {self.last_event_id}", event="hello")

        async def feed_item(self, event: dict[str, str]) -> None:
            await self.send_event(event["text"], id=event["id"])

        async def feed_end(self, event: dict[str, str]) -> None:
            await self.close()

    communicator = HttpCommunicator(
        Feed.as_asgi(channel_layer=channel_layer), "GET", "/", headers=[("last-event-id", "7")]
    )
    start = await communicator.receive_start()
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert (await communicator.receive_body_chunk())["body"] == b"retry: 1500\n\n"
    assert (await communicator.receive_body_chunk())["body"] == b"event: hello\ndata: since 7\n\n"
    await channel_layer.group_send("feed", {"type": "feed.item", "text": "a\nb", "id": "8"})
    assert (await communicator.receive_body_chunk())["body"] == b"id: 8\ndata: a\ndata: b\n\n"
    await channel_layer.group_send("feed", {"type": "feed.end"})
    assert (await communicator.receive_body_chunk()).get("more_body") is False
    await communicator.wait()


async def test_sse_client_disconnect_stops_the_consumer(
    channel_layer: InMemoryChannelLayer,
) -> None:
    disconnected: list[bool] = []

    class Feed(AsyncSseConsumer):
        groups = ["feed2"]

        async def disconnect(self) -> None:
            disconnected.append(True)

    communicator = HttpCommunicator(Feed.as_asgi(channel_layer=channel_layer), "GET", "/")
    await communicator.receive_start()
    await communicator.receive_body_chunk()
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait()
    assert disconnected == [True]


def test_format_event_rejects_newlines_in_fields() -> None:
    assert (
        format_event("x", event="e", id="1", retry=5) == b"event: e\nid: 1\nretry: 5\ndata: x\n\n"
    )
    with pytest.raises(ValueError, match="cannot contain a newline"):
        format_event("x", event="bad\nevent")


async def test_sse_comment_cannot_start_an_event() -> None:
    class Beat(AsyncSseConsumer):
        uses_channel_layer = False

        async def connect(self) -> None:
            await self.send_comment("keep-alive")
            await self.send_comment("two\ndata: forged")
            await self.close()

    communicator = HttpCommunicator(Beat.as_asgi(), "GET", "/")
    await communicator.receive_start()
    await communicator.receive_body_chunk()  # the stream's opening comment
    assert (await communicator.receive_body_chunk())["body"] == b": keep-alive\n\n"
    assert (await communicator.receive_body_chunk())["body"] == b": two\n: data: forged\n\n"
    await communicator.wait()
