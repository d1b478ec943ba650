"""Channels' own consumers, routed by Channels, for ``kanal serve`` and ``kanal worker``.

Nothing here is kanal's: the application is what a Channels project has, with kanal's Redis
layer as its ``BACKEND`` (``TEST_CHANNELS_BACKEND=1`` in the settings).
"""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_app = get_asgi_application()

from asgiref.sync import async_to_sync  # noqa: E402
from channels.consumer import SyncConsumer  # noqa: E402
from channels.generic.websocket import (  # noqa: E402
    AsyncJsonWebsocketConsumer,
    WebsocketConsumer,
)
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class Shout(WebsocketConsumer):  # type: ignore[misc]
    """A sync consumer: each frame back in capitals, with the thread and process it ran in."""

    def connect(self) -> None:
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert text_data is not None
        self.send(text_data=text_data.upper())


class Room(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """A group chat that also hands thumbnails to the worker and relays its answer."""

    groups = ["room"]

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        if "thumbnail" in content:
            await self.channel_layer.send(
                "thumbnails",
                {
                    "type": "thumbnail.make",
                    "name": content["thumbnail"],
                    "reply_channel": self.channel_name,
                },
            )
        else:
            await self.channel_layer.group_send(
                "room", {"type": "chat.message", "text": content["text"], "pid": os.getpid()}
            )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"text": event["text"], "pid": event["pid"]})

    async def thumbnail_done(self, event: dict[str, Any]) -> None:
        await self.send_json({"thumbnail": event["name"], "pid": event["pid"]})


class Thumbnails(SyncConsumer):  # type: ignore[misc]
    """A worker channel's consumer, answering on the sender's channel."""

    def thumbnail_make(self, message: dict[str, Any]) -> None:
        async_to_sync(self.channel_layer.send)(
            message["reply_channel"],
            {"type": "thumbnail.done", "name": message["name"].upper(), "pid": os.getpid()},
        )


application = ProtocolTypeRouter(
    {
        "http": django_app,
        "websocket": URLRouter(
            [path("ws/shout/", Shout.as_asgi()), path("ws/room/", Room.as_asgi())]
        ),
        "channel": ChannelNameRouter({"thumbnails": Thumbnails.as_asgi()}),
    }
)
