"""The documented metrics, the Grafana dashboard and the alert rules against a live scrape.

One process runs everything that has metrics (the chat on direct delivery, a Redis layer, a
worker serving a service that this process calls), so that one scrape holds every name.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from tests.metrics.apps import services
from tests.metrics.scrape import names, parse

from kanal.layers import get_channel_layer, reset_channel_layers
from kanal.metrics import METRIC_NAMES, ProcessSnapshot, start_listener, take_snapshot
from kanal.server import Config, Server
from kanal.testing import RedisServer
from kanal.worker import Worker, call

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAME = re.compile(r"\bkanal_[a-z0-9_]+")


def _family(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name.removesuffix(suffix) in METRIC_NAMES:
            return name.removesuffix(suffix)
    return name


def _expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)


def grafana_names() -> set[str]:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    expressions = list(_expressions(dashboard))
    assert len(expressions) > 30
    return {_family(name) for expr in expressions for name in NAME.findall(expr)}


def documented_names() -> set[str]:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `(kanal_[a-z0-9_]+)` \|", text, flags=re.MULTILINE))


def alert_names() -> set[str]:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    rules = text.split("```yaml")[2].split("```")[0]  # the second block: the alert rules
    assert "alert: KanalMessagesDropped" in rules
    return {_family(name) for name in NAME.findall(rules)}


def test_the_documented_list_is_the_list_of_metrics() -> None:
    assert documented_names() == METRIC_NAMES


def test_the_dashboard_and_the_alerts_query_only_exported_metrics() -> None:
    assert grafana_names() <= METRIC_NAMES, grafana_names() - METRIC_NAMES
    assert alert_names() <= METRIC_NAMES, alert_names() - METRIC_NAMES
    # Every metric is on the dashboard, but for what the dashboard's variables use.
    assert METRIC_NAMES - grafana_names() == set()


@pytest.mark.redis
async def test_a_live_scrape_has_every_metric_the_dashboard_queries(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/6"
    monkeypatch.setenv("KANAL_LAYER", url)
    reset_channel_layers()
    layer = get_channel_layer()
    server = Server(Config(app="examples.chat.app:application", port=0, request_metrics=True))
    await server.start()
    worker = Worker(services, ["double"], layer=layer)
    running = asyncio.create_task(worker.run())

    async def source() -> list[ProcessSnapshot]:
        return [take_snapshot("0", server=server, worker=worker)]

    listener = await start_listener(source, "127.0.0.1:0")
    try:
        await worker.started()
        assert await call("double", {"type": "x", "n": 2}, layer=layer) == {"n": 4}
        base = f"127.0.0.1:{server.port}"
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://{base}/")).status_code == 200
        ws = await websockets.connect(
            f"ws://{base}/ws/chat/lobby/?name=ann", origin=f"http://{base}"
        )
        await ws.recv()  # the welcome
        await ws.send(json.dumps({"text": "hello"}))
        while json.loads(await ws.recv()).get("text") != "hello":
            pass
        other = await websockets.connect(
            f"ws://{base}/ws/chat/lobby/?name=bob", origin=f"http://{base}"
        )
        await other.recv()
        await other.close()
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{listener.port}/metrics")).text
        await ws.close()
    finally:
        worker.stop()
        await running
        await listener.shutdown(grace=1)
        await server.shutdown(grace=1)
        await layer.close()
        reset_channel_layers()
    scraped = {_family(name) for name in names(parse(text))}
    missing = grafana_names() - scraped
    assert not missing, f"the dashboard queries {sorted(missing)}, absent from a live scrape"
    assert METRIC_NAMES - scraped == set()
