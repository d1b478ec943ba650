"""HTTP by Django; a WebSocket that queries the database; a worker channel."""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_app = get_asgi_application()

from kanal.consumers import AsyncConsumer, AsyncJsonWebsocketConsumer  # noqa: E402
from kanal.django import database_sync_to_async  # noqa: E402
from kanal.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter, path  # noqa: E402


def count_connections() -> int:
    """This database's connections, seen from inside one (the query takes a little while)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_sleep(0.05), count(*) FROM pg_stat_activity "
            "WHERE datname = current_database()"
        )
        count: int = cursor.fetchone()[1]
    return count


class Database(AsyncJsonWebsocketConsumer):
    uses_channel_layer = False

    async def connect(self) -> None:
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"connections": await database_sync_to_async(count_connections)()})


class Thumbnails(AsyncConsumer):
    async def thumbnail_make(self, message: dict[str, Any]) -> None:
        await self.channel_layer.send(
            message["reply_channel"],
            {"type": "thumbnail.done", "name": message["name"].upper(), "pid": os.getpid()},
        )


application = ProtocolTypeRouter(
    {
        "http": django_app,
        "websocket": URLRouter([path("ws/db/", Database.as_asgi())]),
        "channel": ChannelNameRouter({"thumbnails": Thumbnails.as_asgi()}),
    }
)
