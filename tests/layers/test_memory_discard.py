"""The memory layer forgets a closed connection's channel at once (``discard_channel``)."""

from __future__ import annotations

import asyncio

import pytest

from kanal.consumers import AsyncWebsocketConsumer
from kanal.exceptions import InvalidName
from kanal.layers import InMemoryChannelLayer
from kanal.testing import WebsocketCommunicator


async def test_churn_leaves_no_channel_behind() -> None:
    """Connections that come and go, each sent messages nobody reads: no channel stays,
    and every message is counted as received or discarded."""
    layer = InMemoryChannelLayer()
    for _ in range(200):
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await layer.group_send("room", {"type": "chat.line"})
        await layer.group_discard("room", channel)
        await layer.discard_channel(channel)
    stats = layer.stats()
    assert layer._channels == {}
    assert stats.discarded == 200
    assert stats.sent == 200


async def test_a_send_after_the_discard_is_freed_and_counted() -> None:
    layer = InMemoryChannelLayer(expiry=60)
    channel = await layer.new_channel()
    await layer.group_add("room", channel)  # a membership that outlived its connection
    await layer.discard_channel(channel)
    await layer.send(channel, {"type": "late"})
    await layer.group_send("room", {"type": "late"})
    assert layer._channels == {}
    stats = layer.stats()
    assert stats.discarded == 2
    assert stats.sent == 1  # the send; the group send delivered nothing
    assert layer.receive_nowait(channel) is None


async def test_the_discard_ends_with_the_expiry() -> None:
    """A discarded name is remembered only as long as a message for it could wait."""
    now = [0.0]
    layer = InMemoryChannelLayer(expiry=10, clock=lambda: now[0])
    channel = await layer.new_channel()
    await layer.discard_channel(channel)
    now[0] = 11.0
    await layer.send(channel, {"type": "kept"})
    assert layer._discarded == {}
    assert (await layer.receive(channel))["type"] == "kept"


async def test_a_channel_received_from_again_is_no_longer_discarded() -> None:
    """Discarding is a promise that nobody receives any more: a receive, waiting at the
    time or coming later, takes it back, and messages reach it again."""
    layer = InMemoryChannelLayer()
    waiting_on = await layer.new_channel()
    waiter = asyncio.ensure_future(layer.receive(waiting_on))
    await asyncio.sleep(0)  # let the receive register (one loop turn, not a wait for time)
    await layer.discard_channel(waiting_on)
    await layer.send(waiting_on, {"type": "for.the.waiter"})
    assert (await asyncio.wait_for(waiter, 5))["type"] == "for.the.waiter"
    later = await layer.new_channel()
    await layer.discard_channel(later)
    receive = asyncio.ensure_future(layer.receive(later))
    await asyncio.sleep(0)
    await layer.send(later, {"type": "kept"})
    assert (await asyncio.wait_for(receive, 5))["type"] == "kept"
    assert layer.stats().discarded == 0


class Room(AsyncWebsocketConsumer):
    channels: list[str] = []

    async def connect(self) -> None:
        self.channels.append(self.channel_name)
        await self.join_group("room")
        await self.accept()


async def test_a_closed_consumer_discards_its_channel() -> None:
    """A message for a connection that closed (sent as it closed) is freed and counted."""
    layer = InMemoryChannelLayer()
    communicator = WebsocketCommunicator(Room.as_asgi(channel_layer=layer), "/ws/")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.disconnect()
    await layer.send(Room.channels[-1], {"type": "too.late"})
    assert layer._channels == {}
    assert layer._groups == {}
    assert layer.stats().discarded == 1


async def test_a_channel_received_from_before_takes_its_discard_back_when_received_again() -> None:
    """The receive's shortcut for a channel received from before must still take a later
    discard back (the entry it caches is gone with the discard)."""
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "one"})
    assert (await layer.receive(channel))["type"] == "one"  # now received from before
    await layer.discard_channel(channel)
    await layer.send(channel, {"type": "lost"})  # freed at once, counted
    assert layer.stats().discarded == 1
    waiting = asyncio.create_task(layer.receive(channel))  # takes the discard back
    await asyncio.sleep(0)  # let it start waiting (no timing: one loop turn)
    await layer.send(channel, {"type": "kept"})
    async with asyncio.timeout(5):
        assert (await waiting)["type"] == "kept"
    assert layer.stats().discarded == 1
    await layer.close()


async def test_a_name_that_is_not_a_string_is_an_invalid_name() -> None:
    layer = InMemoryChannelLayer()
    for name in (["a"], {"a": 1}, 5, None):
        with pytest.raises(InvalidName):
            await layer.receive(name)  # type: ignore[arg-type]
    await layer.close()
