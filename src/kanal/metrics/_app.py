"""The metrics listener's ASGI application: ``/metrics``, and the dashboard when enabled.

``/metrics`` is Prometheus' text format (``prometheus_client`` renders it) and needs no
token: it is on a listener of its own, on loopback unless told otherwise, for a scraper.
``/inspect`` is the same numbers as JSON, per process, for ``kanal inspect http://...``.
``/dashboard`` is a static page (HTML, JavaScript and canvas, no external resource: it must
work without internet access); the numbers it draws come from ``/dashboard/data``, which
needs the dashboard's token, given as ``Authorization: Bearer <token>`` (the page takes it
from its URL's fragment, ``#token=...``, which browsers never send to a server or a proxy).
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST

from kanal.inspect._report import process_summary
from kanal.inspect._snapshot import ProcessSnapshot
from kanal.metrics._collector import render, top_groups
from kanal.typing import Receive, Scope, Send

__all__ = ["MetricsApp", "SnapshotSource", "dashboard_data"]

#: Gives the snapshots of every process the listener serves, for one scrape.
SnapshotSource = Callable[[], Awaitable[Sequence[ProcessSnapshot]]]

#: Groups the dashboard lists.
DASHBOARD_GROUPS = 10


def dashboard_data(snapshots: Sequence[ProcessSnapshot], expected: int) -> dict[str, Any]:
    """What the dashboard page draws: one summary per process and the largest groups."""
    return {
        "taken": time.time(),
        "expected": expected,
        "processes": [process_summary(snap) for snap in sorted(snapshots, key=lambda s: s.process)],
        "groups": [
            {"group": name, "subscribers": count}
            for name, count in top_groups(snapshots, DASHBOARD_GROUPS)
        ],
    }


def _page() -> bytes:
    return resources.files("kanal.metrics").joinpath("dashboard.html").read_bytes()


class MetricsApp:
    """Serves ``/metrics`` from ``source``; the dashboard too when ``dashboard_token`` is set."""

    def __init__(
        self, source: SnapshotSource, *, expected: int = 1, dashboard_token: str | None = None
    ) -> None:
        self.source = source
        self.expected = expected
        self.dashboard_token = dashboard_token
        self._page: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        path = scope["path"]
        if path == "/metrics":
            snapshots = await self.source()
            body = render(snapshots, self.expected)
            await _respond(send, 200, body, CONTENT_TYPE_LATEST)
        elif path == "/dashboard" and self.dashboard_token is not None:
            if self._page is None:
                self._page = _page()
            await _respond(send, 200, self._page, "text/html; charset=utf-8")
        elif path == "/dashboard/data" and self.dashboard_token is not None:
            if not self._authorised(scope):
                await _respond(send, 401, b'{"error": "token"}', "application/json")
                return
            data = dashboard_data(await self.source(), self.expected)
            await _respond(send, 200, json.dumps(data).encode(), "application/json")
        elif path == "/inspect":
            # What ``kanal inspect http://...`` reads: the processes' summaries, the same
            # numbers as /metrics (and so, like it, without a token).
            processes = [process_summary(snap) for snap in await self.source()]
            body = json.dumps({"taken": time.time(), "processes": processes}).encode()
            await _respond(send, 200, body, "application/json")
        elif path == "/":
            links = "/metrics /inspect" + (" /dashboard" if self.dashboard_token else "")
            await _respond(send, 200, f"kanal metrics: {links}\n".encode(), "text/plain")
        else:
            await _respond(send, 404, b"not found\n", "text/plain")

    def _authorised(self, scope: Scope) -> bool:
        expected = self.dashboard_token
        assert expected is not None
        given = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    given = credentials.strip()
        if not given:
            given = parse_qs(scope["query_string"].decode("latin-1")).get("token", [""])[0]
        return hmac.compare_digest(given.encode(), expected.encode())


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
