"""HTTP by Django; WebSockets that query the database (async and sync); a worker channel.

``TEST_NO_HOOKS=1`` takes kanal.django's connection hooks away from the sync consumers, to
show what they are for.
"""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_app = get_asgi_application()

from kanal.consumers import (  # noqa: E402
    AsyncConsumer,
    AsyncJsonWebsocketConsumer,
    JsonWebsocketConsumer,
    remove_sync_hooks,
)
from kanal.django import database_sync_to_async  # noqa: E402
from kanal.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter, path  # noqa: E402

if os.environ.get("TEST_NO_HOOKS"):
    from kanal.django._db import HOOKS_KEY

    remove_sync_hooks(HOOKS_KEY)


def backend_pid() -> str:
    """The server process of this thread's connection, and when it started (so that a pid
    the system gave again names another connection); the query takes a little while."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_sleep(0.05), pg_backend_pid(), "
            "(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"
        )
        _, pid, started = cursor.fetchone()
    return f"{pid}@{started.isoformat()}"


class Database(AsyncJsonWebsocketConsumer):
    """The ORM through ``database_sync_to_async``."""

    uses_channel_layer = False

    async def connect(self) -> None:
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"pid": await database_sync_to_async(backend_pid)()})


class SyncDatabase(JsonWebsocketConsumer):
    """The ORM straight from a sync consumer's handler, as Channels users write it."""

    uses_channel_layer = False

    def connect(self) -> None:
        self.accept()

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json({"pid": backend_pid()})


class Thumbnails(AsyncConsumer):
    async def thumbnail_make(self, message: dict[str, Any]) -> None:
        await self.channel_layer.send(
            message["reply_channel"],
            {"type": "thumbnail.done", "name": message["name"].upper(), "pid": os.getpid()},
        )


application = ProtocolTypeRouter(
    {
        "http": django_app,
        "websocket": URLRouter(
            [path("ws/db/", Database.as_asgi()), path("ws/db-sync/", SyncDatabase.as_asgi())]
        ),
        "channel": ChannelNameRouter({"thumbnails": Thumbnails.as_asgi()}),
    }
)
