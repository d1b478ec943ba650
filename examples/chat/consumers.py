"""The chat's consumers: one WebSocket consumer per browser tab, and the page server."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from kanal.consumers import AsyncHttpConsumer, AsyncJsonWebsocketConsumer
from kanal.exceptions import HistoryGap, InvalidPosition, LayerUnavailable
from kanal.layers import BaseChannelLayer, direct_message

logger = logging.getLogger("examples.chat")

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


# Join and leave notices are gathered for this long per room and process, then sent as
# one: every newcomer's notice goes to every member, so a room filling up one by one costs
# O(n^2) frames if each is sent alone (5,000 members joining: 12.5 million frames), and
# O(n) per window like this. A window this short still reads as "at once" to a person.
NOTICE_WINDOW = 0.1
# A gathered notice names at most this many people and counts the others.
NOTICE_NAMES = 10
# Each room keeps its last 100 lines and notices for 5 minutes (docs/history.md), so that a
# page that lost its connection (a server restart, a laptop's sleep) gets what it missed.
HISTORY = {"size": 100, "ttl": 300}
# Every broadcast to a room carries its position under this key, which the page sends back
# as ?since= when it reconnects.
POSITION = "position"
_ROOMS = re.compile(r"chat\.[^.]+\Z")


def keep_history(layer: BaseChannelLayer) -> bool:
    """Have the rooms of ``layer`` keep history (once per layer); False if it cannot."""
    if not layer.supports_history:
        return False
    if layer.history_policy("chat.room") is None:
        # The rooms, not their ".online" groups of presence diffs (no history there).
        layer.add_history(_ROOMS, HISTORY)
    return True


class _Notices:
    """Join and leave notices of one process, gathered per room and sent once per window."""

    def __init__(self) -> None:
        # (layer, group) -> {"join": [names], "leave": [names]}
        self.pending: dict[tuple[int, str], dict[str, list[str]]] = {}

    def add(self, layer: BaseChannelLayer, group: str, kind: str, name: str) -> None:
        key = (id(layer), group)
        waiting = self.pending.get(key)
        if waiting is None:
            waiting = self.pending[key] = {"join": [], "leave": []}
            asyncio.get_running_loop().call_later(
                NOTICE_WINDOW, lambda: asyncio.ensure_future(self.flush(layer, group, key))
            )
        waiting[kind].append(name)

    async def flush(self, layer: BaseChannelLayer, group: str, key: tuple[int, str]) -> None:
        waiting = self.pending.pop(key, None)
        if waiting is None or layer.closed:
            return
        for kind, names in waiting.items():
            if not names:
                continue
            notice: dict[str, Any] = {"kind": kind, "name": names[0]}
            if len(names) > 1:
                notice = {"kind": kind, "names": names[:NOTICE_NAMES], "count": len(names)}
            try:
                await layer.group_send(
                    group, direct_message(group, text=json.dumps(notice), position_field=POSITION)
                )
            except Exception as exc:  # the room misses a notice; the chat goes on
                logger.warning("chat: sending a %s notice to %s failed: %r", kind, group, exc)


_notices = _Notices()


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """One chat participant.

    The client sends ``{"text": "..."}``; every member of the room (in any server process
    sharing the layer) gets ``{"kind": "message", "name", "text", "time"}``, and
    ``{"kind": "join"|"leave", "name"}`` when someone comes or goes (``"names"`` and
    ``"count"`` instead of ``"name"`` when several did within ``NOTICE_WINDOW``).

    On a layer with history each of these carries its ``"position"`` (and the welcome the
    room's); a page that reconnects with ``?since=<position>`` first gets what it missed,
    each line once, or ``{"kind": "missed", "position"}`` if that is no longer kept.
    Who is online: a client connecting with ``?presence=1`` is listed and gets ``{"kind":
    "presence", "state": {name: {connection: {"name"}}}}``, then presence diffs (``{"type":
    "presence.diff", "joins", "leaves"}``, gathered per 100 ms) as the room changes
    (docs/presence.md).

    Room lines and notices are direct broadcasts: encoded once by the sender, written by
    each server to its members' sockets without waking their consumers (docs/direct.md).
    If the room cannot be reached (the layer's Redis is down for longer than the layer
    waits for it), the sender gets ``{"kind": "unavailable", "error"}`` and stays connected.
    """

    # In the decoupled mode a worker restart moves the connection to the next worker with
    # these attributes (and the group joined); connect() does not run again there, so
    # nobody gets a second welcome or join notice.
    handover_attributes = ("room", "group", "name")

    async def connect(self) -> None:
        """Subscribe to the room, greet the client, tell the room."""
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = f"chat.{self.room}"
        query = parse_qs(bytes(self.scope.get("query_string", b"")).decode("latin-1"))
        self.name = clean_name(query.get("name", [""])[0])
        assert self.channel_layer is not None
        self.keeps_history = keep_history(self.channel_layer)
        since = query.get("since", [""])[0] if self.keeps_history else ""
        if since:
            await self.accept()
            await self.recover(since)
        else:
            # The server writes the room's lines to this socket itself; the subscription
            # ends with the connection.
            await self.subscribe_direct(self.group)
            await self.accept()
        welcome = {"kind": "welcome", "name": self.name, "room": self.room}
        await self.send_json(welcome | await self.where())
        _notices.add(self.channel_layer, self.group, "join", self.name)
        await self.join_presence()

    # -- who is online (docs/presence.md) ------------------------------------------------------

    async def join_presence(self) -> None:
        """Take part in who is online, if the page asks (``?presence=1``): be listed in the
        room, get who is, then the changes.

        Keyed by name: two tabs of one name are one person with two connections. The
        changes are diffs gathered per 100 ms, direct broadcasts to the room's ``.online``
        group. Clients that do not ask (scripts, the load benchmarks) are neither listed
        nor sent anything more.
        """
        query = parse_qs(bytes(self.scope.get("query_string", b"")).decode("latin-1"))
        if query.get("presence", [""])[0] != "1":
            return
        online = f"{self.group}.online"
        await self.subscribe_direct(online)
        await self.presence_join(online, self.name, {"name": self.name}, notify="direct")
        await self.send_json({"kind": "presence", "state": await self.presence(online)})

    async def resume(self, state: dict[str, Any]) -> None:
        """After a hand-over between workers (decoupled mode): this instance's connection
        is the one listed online now (the last instance's left with it)."""
        await super().resume(state)
        await self.join_presence()

    # -- recovery: a page that reconnects with the last position it saw ----------------------

    async def recover(self, since: str) -> None:
        """Subscribe from ``since``: the server writes what the page missed, then live
        lines; if that is no longer kept, the page is told how far it is behind."""
        try:
            await self.subscribe_direct(self.group, since=since)
        except InvalidPosition:
            await self.subscribe_direct(self.group)  # a page's junk: start afresh
        except HistoryGap as exc:  # subscribed all the same, live from now on
            await self.send_json({"kind": "missed", POSITION: str(exc.position)})

    async def where(self) -> dict[str, str]:
        """The room's current position, for the page to resume from (if it keeps history)."""
        if not self.keeps_history:
            return {}
        assert self.channel_layer is not None
        history = await self.channel_layer.group_history(self.group, limit=0)
        return {POSITION: str(history.position)}

    async def disconnect(self, code: int) -> None:
        """Tell the room."""
        if hasattr(self, "name") and self.channel_layer is not None:
            _notices.add(self.channel_layer, self.group, "leave", self.name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """A line typed by this user: validate it and send it to the room."""
        text = content.get("text") if isinstance(content, dict) else None
        if not isinstance(text, str) or not text.strip():
            await self.send_json({"kind": "error", "error": 'send {"text": "..."}'})
            return
        if len(text) > MAX_TEXT:
            await self.send_json({"kind": "error", "error": f"at most {MAX_TEXT} characters"})
            return
        line = {"kind": "message", "name": self.name, "text": text.strip(), "time": time.time()}
        # Encoded once here, for every member of the room; each gets it with its position.
        await self.group_send_direct(
            self.group, text_data=json.dumps(line), position_field=POSITION
        )

    async def on_layer_unavailable(self, exc: LayerUnavailable, message: dict[str, Any]) -> None:
        """The room could not be reached (its Redis down for longer than the layer waits):
        the connection stays open, and the user is told that the line was not sent."""
        await self.send_json(
            {"kind": "unavailable", "error": "The chat is unavailable right now: not sent."}
        )


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
