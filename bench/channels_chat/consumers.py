"""The chat consumer, written the way the Channels tutorial writes it.

It does what ``examples.chat``'s consumer does, with the same messages on the wire: join the
room's group, greet the client, announce joins and leaves, and ``group_send`` every line
received to the room (the sender included), each as ``{"kind": "message", "name", "text",
"time"}``.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """One chat participant in room ``ws/chat/<room>/?name=...``."""

    async def connect(self) -> None:
        """Join the room's group, greet the client, tell the room."""
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = f"chat.{self.room}"
        query = parse_qs(bytes(self.scope.get("query_string", b"")).decode("latin-1"))
        self.name = (query.get("name", [""])[0] or "guest")[:32]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send(json.dumps({"kind": "welcome", "name": self.name, "room": self.room}))
        await self.channel_layer.group_send(self.group, {"type": "chat.join", "name": self.name})

    async def disconnect(self, code: int) -> None:
        """Leave the group and tell the room."""
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.channel_layer.group_send(
                self.group, {"type": "chat.leave", "name": self.name}
            )

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """A line typed by this user: send it to the room."""
        try:
            content = json.loads(text_data or "")
        except ValueError:
            content = None
        text = content.get("text") if isinstance(content, dict) else None
        if not isinstance(text, str) or not text.strip():
            await self.send(json.dumps({"kind": "error", "error": 'send {"text": "..."}'}))
            return
        await self.channel_layer.group_send(
            self.group,
            {"type": "chat.message", "name": self.name, "text": text.strip(), "time": time.time()},
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A line from someone in the room."""
        await self.send(
            json.dumps(
                {
                    "kind": "message",
                    "name": event["name"],
                    "text": event["text"],
                    "time": event["time"],
                }
            )
        )

    async def chat_join(self, event: dict[str, Any]) -> None:
        """Someone entered the room."""
        await self.send(json.dumps({"kind": "join", "name": event["name"]}))

    async def chat_leave(self, event: dict[str, Any]) -> None:
        """Someone left the room."""
        await self.send(json.dumps({"kind": "leave", "name": event["name"]}))


class FanoutConsumer(ChatConsumer):  # type: ignore[misc]
    """The chat without join and leave notices, for ``bench.fanout``'s rooms of thousands
    (every newcomer's notice to every member would make joining O(n^2) frames)."""

    async def connect(self) -> None:
        """Join the room's group and greet the client; no notice to the room."""
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = f"chat.{self.room}"
        self.name = "guest"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        """Leave the group."""
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
