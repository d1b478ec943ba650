"""The chat's consumers: one WebSocket consumer per browser tab, and the page server."""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from kanal.consumers import AsyncHttpConsumer, AsyncJsonWebsocketConsumer
from kanal.exceptions import LayerUnavailable

STATIC = Path(__file__).parent / "static"

# Long enough for a paragraph; a chat line longer than this is a paste gone wrong, and
# every member of the room would have to receive it.
MAX_TEXT = 2000
MAX_NAME = 32
_NAME_JUNK = re.compile(r"[\x00-\x1f\x7f]")


def clean_name(raw: str | None) -> str:
    """A display name: control characters removed, trimmed, at most 32 characters."""
    name = _NAME_JUNK.sub("", raw or "").strip()[:MAX_NAME]
    return name or f"guest-{secrets.token_hex(2)}"


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """One chat participant.

    The client sends ``{"text": "..."}``; every member of the room (in any server process
    sharing the layer) gets ``{"kind": "message", "name", "text", "time"}``, and
    ``{"kind": "join"|"leave", "name"}`` when someone comes or goes. If the room cannot
    be reached (the layer's Redis is down for longer than the layer waits for it), the
    sender gets ``{"kind": "unavailable", "error"}`` and stays connected.
    """

    # In the decoupled mode a worker restart moves the connection to the next worker with
    # these attributes (and the group joined); connect() does not run again there, so
    # nobody gets a second welcome or join notice.
    handover_attributes = ("room", "group", "name")

    async def connect(self) -> None:
        """Join the room's group, greet the client, tell the room."""
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = f"chat.{self.room}"
        query = parse_qs(bytes(self.scope.get("query_string", b"")).decode("latin-1"))
        self.name = clean_name(query.get("name", [""])[0])
        # Joined here rather than through ``groups``: the group name depends on the URL.
        # join_group() also keeps the membership renewed and leaves it at disconnect.
        await self.join_group(self.group)
        await self.accept()
        await self.send_json({"kind": "welcome", "name": self.name, "room": self.room})
        await self.broadcast({"type": "chat.join", "name": self.name})

    async def disconnect(self, code: int) -> None:
        """Tell the room (the group was left already)."""
        if hasattr(self, "name"):
            await self.broadcast({"type": "chat.leave", "name": self.name})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """A line typed by this user: validate it and send it to the room."""
        text = content.get("text") if isinstance(content, dict) else None
        if not isinstance(text, str) or not text.strip():
            await self.send_json({"kind": "error", "error": 'send {"text": "..."}'})
            return
        if len(text) > MAX_TEXT:
            await self.send_json({"kind": "error", "error": f"at most {MAX_TEXT} characters"})
            return
        await self.broadcast(
            {"type": "chat.message", "name": self.name, "text": text.strip(), "time": time.time()}
        )

    async def on_layer_unavailable(self, exc: LayerUnavailable, message: dict[str, Any]) -> None:
        """The room could not be reached (its Redis down for longer than the layer waits):
        the connection stays open, and the user is told that the line was not sent."""
        await self.send_json(
            {"kind": "unavailable", "error": "The chat is unavailable right now: not sent."}
        )

    async def broadcast(self, message: dict[str, Any]) -> None:
        """Send an event to everyone in the room, this connection included."""
        assert self.channel_layer is not None
        await self.channel_layer.group_send(self.group, message)

    # Handlers for the group's events (type "chat.message" -> chat_message).

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A line from someone in the room."""
        await self.send_json(
            {"kind": "message", "name": event["name"], "text": event["text"], "time": event["time"]}
        )

    async def chat_join(self, event: dict[str, Any]) -> None:
        """Someone entered the room."""
        await self.send_json({"kind": "join", "name": event["name"]})

    async def chat_leave(self, event: dict[str, Any]) -> None:
        """Someone left the room."""
        await self.send_json({"kind": "leave", "name": event["name"]})


_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
}


class PageConsumer(AsyncHttpConsumer):
    """Serves the page (for ``/`` and every room URL) and its two static files."""

    uses_channel_layer = False
    file_name: str = "index.html"

    async def handle(self, body: bytes) -> None:
        """Send the file, with no caching so a restarted demo serves fresh code."""
        if self.scope["method"] not in ("GET", "HEAD"):
            await self.send_response(405, b"Method Not Allowed\n", headers=[(b"allow", b"GET")])
            return
        path = STATIC / self.file_name
        content = path.read_bytes()
        headers = [
            (b"content-type", _TYPES[path.suffix]),
            (b"cache-control", b"no-cache"),
            (b"x-content-type-options", b"nosniff"),
        ]
        await self.send_response(
            200, b"" if self.scope["method"] == "HEAD" else content, headers=headers
        )
