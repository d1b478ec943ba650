"""Consumers on groups with history: a reconnecting client gets what it missed, then live
messages, each once and in order, through handlers and through direct delivery."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

import pytest
import websockets

from kanal.consumers import AsyncWebsocketConsumer
from kanal.exceptions import ASGIMessageError, HistoryGap
from kanal.layers import (
    BaseChannelLayer,
    DirectGroupTransport,
    InMemoryChannelLayer,
    Position,
    direct_message,
)
from kanal.layers.redis import RedisChannelLayer
from kanal.testing import LiveServer, RedisServer, WebsocketCommunicator

GROUP = "news.today"
HISTORY = {"news.*": {"size": 50, "ttl": 60}}


def _since(scope: dict[str, Any]) -> str | None:
    query = parse_qs(bytes(scope.get("query_string", b"")).decode())
    return query.get("since", [None])[0]


class Reader(AsyncWebsocketConsumer):
    """Handler delivery: each news item goes out with its position."""

    gate: asyncio.Event | None = None  # set by a test to hold the handler back

    async def connect(self) -> None:
        await self.accept()
        try:
            position = await self.join_group(GROUP, since=_since(self.scope))
        except HistoryGap as exc:
            await self.send(text_data=json.dumps({"reload": str(exc.position)}))
            return
        await self.send(text_data=json.dumps({"at": str(position)}))

    async def news_item(self, event: dict[str, Any]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await self.send(text_data=json.dumps({"n": event["n"], "pos": event["position"]}))


async def _publish(layer: BaseChannelLayer, numbers: range) -> None:
    for n in numbers:
        await layer.group_send(GROUP, {"type": "news.item", "n": n})


async def _receive_json(communicator: WebsocketCommunicator) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(await communicator.receive_from(timeout=5))
    return result


async def test_handlers_get_what_was_missed_then_live_ones() -> None:
    layer = InMemoryChannelLayer(history=HISTORY)
    try:
        first = WebsocketCommunicator(Reader.as_asgi(channel_layer=layer), "/")
        assert (await first.connect())[0]
        start = await _receive_json(first)
        await _publish(layer, range(3))
        seen = [await _receive_json(first) for _ in range(3)]
        assert [item["n"] for item in seen] == [0, 1, 2]
        assert Position.parse(seen[0]["pos"]).offset == Position.parse(start["at"]).offset + 1
        await first.disconnect()

        await _publish(layer, range(3, 6))  # missed while away
        again = WebsocketCommunicator(
            Reader.as_asgi(channel_layer=layer), f"/?since={seen[-1]['pos']}"
        )
        assert (await again.connect())[0]
        caught_up = [await _receive_json(again) for _ in range(3)]
        assert [item["n"] for item in caught_up] == [3, 4, 5]
        assert (await _receive_json(again))["at"] == caught_up[-1]["pos"]
        await _publish(layer, range(6, 8))
        assert [(await _receive_json(again))["n"] for _ in range(2)] == [6, 7]
        assert await again.receive_nothing(timeout=0.2)
        await again.disconnect()
    finally:
        await layer.close()


async def test_a_position_too_old_is_a_gap_the_client_is_told_about() -> None:
    layer = InMemoryChannelLayer(history={"news.*": {"size": 2, "ttl": 60}})
    try:
        await _publish(layer, range(1))
        old = (await layer.group_history(GROUP)).position
        await _publish(layer, range(1, 5))
        communicator = WebsocketCommunicator(Reader.as_asgi(channel_layer=layer), f"/?since={old}")
        assert (await communicator.connect())[0]
        told = await _receive_json(communicator)
        current = (await layer.group_history(GROUP)).position
        assert told == {"reload": str(current)}
        # Still subscribed, and followed from the current position on.
        await _publish(layer, range(5, 6))
        assert (await _receive_json(communicator))["n"] == 5
        await communicator.disconnect()
    finally:
        await layer.close()


async def test_live_messages_dropped_on_the_way_are_fetched_from_the_history() -> None:
    # The consumer's channel holds 2 messages; its handler is held back while 10 arrive,
    # so that most are dropped (counted) on the way. The next message shows the gap, and
    # the consumer sends the lost ones from the history before it, in order.
    layer = InMemoryChannelLayer(history=HISTORY, capacity=2)
    gate = asyncio.Event()

    class Slow(Reader):
        pass

    Slow.gate = gate
    try:
        communicator = WebsocketCommunicator(Slow.as_asgi(channel_layer=layer), "/")
        assert (await communicator.connect())[0]
        await _receive_json(communicator)
        await _publish(layer, range(10))
        assert layer.stats().groups[GROUP].dropped > 0  # lost on the way, and counted
        gate.set()
        received = [(await _receive_json(communicator))["n"] for _ in range(3)]
        assert received == [0, 1, 2]  # what the channel held; the loss shows at the next one
        await _publish(layer, range(10, 11))
        received = [(await _receive_json(communicator))["n"] for _ in range(8)]
        assert received == list(range(3, 11))
        assert await communicator.receive_nothing(timeout=0.2)
        await communicator.disconnect()
    finally:
        await layer.close()


class DirectReader(AsyncWebsocketConsumer):
    """Direct delivery: the server writes the broadcasts, positions inside."""

    async def connect(self) -> None:
        await self.accept()
        try:
            await self.subscribe_direct(GROUP, since=_since(self.scope))
        except HistoryGap as exc:
            await self.send(text_data=json.dumps({"reload": str(exc.position)}))
            return
        await self.send(text_data=json.dumps({"ready": True}))


async def _broadcast(layer: BaseChannelLayer, numbers: range) -> None:
    for n in numbers:
        text = json.dumps({"n": n})
        await layer.group_send(GROUP, direct_message(GROUP, text=text, position_field="pos"))
        await asyncio.sleep(0)


async def _recv_json(client: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(await asyncio.wait_for(client.recv(), 5))
    return result


async def _check_direct_recovery(live_server: Any, layer: BaseChannelLayer) -> None:
    server: LiveServer = await live_server(
        DirectReader.as_asgi(channel_layer=layer),
        direct_groups=lambda deliver: DirectGroupTransport(deliver, layer),
    )
    async with websockets.connect(server.ws_url + "/") as client:
        assert await _recv_json(client) == {"ready": True}
        await _broadcast(layer, range(3))
        seen = [await _recv_json(client) for _ in range(3)]
    assert [item["n"] for item in seen] == [0, 1, 2]
    last = seen[-1]["pos"]
    await _broadcast(layer, range(3, 20))  # missed while away
    # Reconnect while more keep coming: the catch-up and the live ones meet.
    more = asyncio.create_task(_broadcast(layer, range(20, 80)))
    async with websockets.connect(f"{server.ws_url}/?since={last}") as client:
        numbers: list[int] = []
        offsets: list[int] = []
        while len(numbers) < 77:
            item = await _recv_json(client)
            if "ready" in item:
                continue
            numbers.append(item["n"])
            offsets.append(Position.parse(item["pos"]).offset)
        await more
        assert numbers == list(range(3, 80))  # no gap, no duplicate, in order
        assert offsets == list(range(offsets[0], offsets[0] + 77))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.recv(), 0.2)


async def test_direct_subscribers_recover_on_memory(live_server: Any) -> None:
    layer = InMemoryChannelLayer(history={"news.*": {"size": 100, "ttl": 60}})
    try:
        await _check_direct_recovery(live_server, layer)
    finally:
        await layer.close()


@pytest.mark.redis
async def test_direct_subscribers_recover_on_redis(
    live_server: Any, redis_server: RedisServer
) -> None:
    layer = RedisChannelLayer(
        hosts=[redis_server.url],
        prefix="history-direct",
        history={"news.*": {"size": 100, "ttl": 60}},
        channel_capacity={"direct.*": 10_000},
    )
    try:
        await layer.flush()
        await _check_direct_recovery(live_server, layer)
    finally:
        await layer.flush()
        await layer.close()


async def test_direct_without_the_extension_recovers_through_the_consumer() -> None:
    layer = InMemoryChannelLayer(history=HISTORY)
    try:
        await _broadcast(layer, range(3))
        since = Position((await layer.group_history(GROUP)).position.epoch, 1)
        communicator = WebsocketCommunicator(
            DirectReader.as_asgi(channel_layer=layer), f"/?since={since}"
        )
        assert (await communicator.connect())[0]
        assert [(await _receive_json(communicator)).get("n") for _ in range(2)] == [1, 2]
        assert await _receive_json(communicator) == {"ready": True}
        await _broadcast(layer, range(3, 4))
        live = await _receive_json(communicator)
        assert live["n"] == 3 and Position.parse(live["pos"]).offset == 4
        await communicator.disconnect()
    finally:
        await layer.close()


async def test_a_subscribe_with_since_before_accept_is_refused(live_server: Any) -> None:
    layer = InMemoryChannelLayer(history=HISTORY)
    errors: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        try:
            await send({"type": "kanal.group.subscribe", "group": GROUP, "since": "e:1"})
        except ASGIMessageError as exc:
            errors.append(exc)
        await send({"type": "websocket.close"})

    try:
        server: LiveServer = await live_server(
            app, direct_groups=lambda deliver: DirectGroupTransport(deliver, layer)
        )
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(server.ws_url + "/")
        assert len(errors) == 1 and "accept first" in str(errors[0])
    finally:
        await layer.close()
