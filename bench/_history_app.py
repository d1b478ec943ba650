"""The application ``bench.history`` serves: one room on direct delivery with history.

A WebSocket is subscribed to the room (``?since=<position>``: from that position, the
missed broadcasts first) and gets ``{"welcome": "<position>"}``; HTTP answers 200 (what the
bench's readiness check asks). The layer comes from ``KANAL_LAYER``, whose query string
gives the room its history (``?history=bench.*:200:300``).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from kanal.consumers import AsyncHttpConsumer, AsyncWebsocketConsumer
from kanal.exceptions import HistoryGap
from kanal.routing import ProtocolTypeRouter

GROUP = "bench.room"


class Reader(AsyncWebsocketConsumer):
    """Subscribe (from ``since``), then say where the room is."""

    async def connect(self) -> None:
        query = parse_qs(bytes(self.scope.get("query_string", b"")).decode())
        since = query.get("since", [None])[0]
        await self.accept()
        try:
            await self.subscribe_direct(GROUP, since=since)
        except HistoryGap as exc:
            await self.send(text_data=json.dumps({"gap": str(exc.position)}))
            return
        assert self.channel_layer is not None
        position = (await self.channel_layer.group_history(GROUP, limit=0)).position
        await self.send(text_data=json.dumps({"welcome": str(position)}))


class Ready(AsyncHttpConsumer):
    uses_channel_layer = False

    async def handle(self, body: bytes) -> None:
        await self.send_response(200, b"ok\n")


application: Any = ProtocolTypeRouter({"http": Ready.as_asgi(), "websocket": Reader.as_asgi()})
