"""A Channels user's tests, as a script: ``channels.testing`` against kanal's layer.

``python -W error -X dev _channels_testing.py LAYER_URL`` (``memory://`` or ``redis://...``):
Channels' consumers and communicators with kanal's layer as ``CHANNEL_LAYERS``' ``BACKEND``,
each "test" on an event loop of its own (as pytest-asyncio runs them) and the layer never
closed (Channels' users do not close theirs). Prints ``passed`` at the end.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from django.conf import settings

from django import setup

URL = sys.argv[1]
if URL == "memory://":
    BACKEND: dict[str, Any] = {"BACKEND": "kanal.layers.InMemoryChannelLayer"}
else:
    BACKEND = {"BACKEND": "kanal.layers.redis.RedisChannelLayer", "CONFIG": {"hosts": [URL]}}
settings.configure(
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "channels"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    CHANNEL_LAYERS={"default": BACKEND},
    USE_TZ=True,
)
setup()

from asgiref.sync import async_to_sync  # noqa: E402
from channels.consumer import SyncConsumer  # noqa: E402
from channels.generic.websocket import AsyncJsonWebsocketConsumer, WebsocketConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ChannelNameRouter  # noqa: E402
from channels.testing import ApplicationCommunicator, WebsocketCommunicator  # noqa: E402


class Room(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    groups = ["room"]

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.channel_layer.group_send("room", {"type": "chat.message", **content})

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"text": event["text"]})


class Shout(WebsocketConsumer):  # type: ignore[misc]
    def connect(self) -> None:
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data=(text_data or "").upper())


class Jobs(SyncConsumer):  # type: ignore[misc]
    def job_double(self, message: dict[str, Any]) -> None:
        async_to_sync(self.channel_layer.send)(
            message["reply"], {"type": "job.done", "n": message["n"] * 2}
        )


async def test_group_chat() -> None:
    layer = get_channel_layer()
    assert type(layer).__module__.startswith("kanal.layers"), type(layer)
    alice = WebsocketCommunicator(Room.as_asgi(), "/room/")
    bob = WebsocketCommunicator(Room.as_asgi(), "/room/")
    assert (await alice.connect(timeout=5))[0]
    assert (await bob.connect(timeout=5))[0]
    await alice.send_json_to({"text": "hello"})
    assert await bob.receive_json_from(timeout=5) == {"text": "hello"}
    assert await alice.receive_json_from(timeout=5) == {"text": "hello"}
    await layer.group_send("room", {"type": "chat.message", "text": "from a view"})
    assert await bob.receive_json_from(timeout=5) == {"text": "from a view"}
    assert await alice.receive_json_from(timeout=5) == {"text": "from a view"}
    await alice.disconnect(timeout=5)
    await bob.disconnect(timeout=5)
    assert await bob.receive_nothing(timeout=0.05)


async def test_sync_consumer() -> None:
    shout = WebsocketCommunicator(Shout.as_asgi(), "/shout/")
    assert (await shout.connect(timeout=5))[0]
    await shout.send_to(text_data="hi")
    assert await shout.receive_from(timeout=5) == "HI"
    await shout.disconnect(timeout=5)


async def test_worker_channel() -> None:
    layer = get_channel_layer()
    jobs = ApplicationCommunicator(
        ChannelNameRouter({"jobs": Jobs.as_asgi()}), {"type": "channel", "channel": "jobs"}
    )
    reply = await layer.new_channel()
    await jobs.send_input({"type": "job.double", "n": 21, "reply": reply})
    assert await asyncio.wait_for(layer.receive(reply), 5) == {"type": "job.done", "n": 42}
    jobs.stop()  # cancels it (asgiref's stop is sync); wait() sees it end
    await jobs.wait(timeout=5)


if __name__ == "__main__":
    for test in (test_group_chat, test_sync_consumer, test_worker_channel):
        asyncio.run(test())  # a loop per test, as pytest-asyncio gives
    print("passed", os.getpid())
