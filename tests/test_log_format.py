"""``--log-format json``: one JSON object per line, the same fields from every command."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.child_process import child_process
from websockets.asyncio.client import connect

import kanal._logging
from kanal._logging import CONNECTION, JsonFormatter
from kanal._tasks import detached_task
from kanal.layers.redis import RedisChannelLayer
from kanal.testing import LiveServer, RedisServer, free_port

WORKER_APPS = Path(__file__).resolve().parent / "worker"


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    """Every line as JSON: one that is not fails the test."""
    return [json.loads(line) for line in lines if line.strip()]


def test_a_record_becomes_one_json_object_with_its_context() -> None:
    record = logging.LogRecord("kanal.server", logging.ERROR, __file__, 1, "x %s", ("y",), None)
    record.path = "/ws/chat/"
    record.channel = "specific.a!b"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "error" and entry["logger"] == "kanal.server"
    assert entry["message"] == "x y" and entry["pid"] == record.process
    assert entry["path"] == "/ws/chat/" and entry["channel"] == "specific.a!b"
    assert "group" not in entry  # only the fields the record has
    assert "ValueError: boom" in entry["exc"]
    assert entry["ts"].endswith("+00:00")


async def test_kanal_serve_logs_json_lines_with_the_request_s_fields(tmp_path: Path) -> None:
    port = free_port()
    command = child_process(
        "-m", "kanal.cli", "serve", "tests.server.apps:hello", "--port", str(port),
        "--log-format", "json", "--access-log",
    )  # fmt: skip
    async with command as server:
        await server.wait_for('"message": "kanal serve', within=30)
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/hi?x=1")).status_code == 200
        await server.wait_for('"path": "/hi"')
        assert await server.stop() == 0
    entries = parsed(server.log)
    access = [e for e in entries if e.get("path") == "/hi"]
    assert access[0]["status"] == 200 and access[0]["client"].startswith("127.0.0.1:")
    assert {e["pid"] for e in entries} == {server.pid}
    assert all({"ts", "level", "logger", "message", "pid"} <= e.keys() for e in entries)


async def test_kanal_worker_and_scheduler_log_the_same_fields(tmp_path: Path) -> None:
    layer = f"ipc://{tmp_path / 'layer'}"
    for args, ready in (
        (["worker", "worker_apps:tasks", "jobs"], "worker listening on"),
        (["scheduler", "worker_apps"], "scheduler firing"),
    ):
        command = child_process(
            "-m", "kanal.cli", *args, "--layer", layer, "--log-format", "json",
            path=(WORKER_APPS,),
        )  # fmt: skip
        async with command as process:
            await process.wait_for(ready, within=30)
            assert await process.stop() == 0
        entries = parsed(process.log)
        assert any(ready in e["message"] for e in entries)
        assert all({"ts", "level", "logger", "message", "pid"} <= e.keys() for e in entries)


async def test_every_line_about_a_connection_carries_its_id_the_application_s_too() -> None:
    port = free_port()
    command = child_process(
        "-m", "kanal.cli", "serve", "tests.server.apps:logging_app", "--port", str(port),
        "--log-format", "json", "--access-log",
    )  # fmt: skip
    async with command as server:
        await server.wait_for('"message": "kanal serve', within=30)
        async with httpx.AsyncClient() as http:  # one connection, kept alive: one id
            for path in ("/one", "/two"):
                assert (await http.get(f"http://127.0.0.1:{port}{path}")).status_code == 200
        for text in ("first", "second"):  # a connection each
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send(text)
                assert await ws.recv() == text
        await server.wait_for('"message": "app saw second"')
        assert await server.stop() == 0
    entries = parsed(server.log)

    def ids(text: str) -> set[str]:
        return {e["connection"] for e in entries if text in e["message"]}

    kept_alive = ids("app answered")
    assert len(kept_alive) == 1 and kept_alive == ids('"GET /')  # the app's and the access log's
    first, second = ids("app saw first"), ids("app saw second")
    assert len(first) == len(second) == 1 and first != second
    handshakes = ids('"WEBSOCKET /ws"')
    assert handshakes == first | second and not handshakes & kept_alive
    # Lines about no connection (the server starting) carry none.
    assert all("connection" not in e for e in entries if e["message"].startswith("kanal serve"))


async def test_kanal_s_own_tasks_carry_no_connection_id() -> None:
    """A layer's drain or a pool's probe, started by a connection's first layer call, must
    not stamp that connection's id on its lines for the rest of its life."""
    CONNECTION.set("abc-1")
    assert await detached_task(_current_connection()) is None
    assert await asyncio.create_task(_current_connection()) == "abc-1"  # what it guards against


async def _current_connection() -> str | None:
    return CONNECTION.get()


@pytest.mark.redis
async def test_a_layer_s_outage_lines_carry_no_connection_id() -> None:
    with RedisServer() as server:
        await _outage_lines_carry_no_connection_id(server)


async def _outage_lines_carry_no_connection_id(redis_server: RedisServer) -> None:
    lines: list[dict[str, Any]] = []
    warned = asyncio.Event()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(JsonFormatter().format(record)))  # formatted where logged
            warned.set()

    handler = Collect(logging.WARNING)
    logging.getLogger("kanal").addHandler(handler)
    layer = RedisChannelLayer.from_url(redis_server.url)
    try:

        async def connection() -> None:  # as a connection's application would
            CONNECTION.set("abc-1")
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "hello"})
            assert (await layer.receive(channel))["type"] == "hello"

        await asyncio.create_task(connection())
        redis_server.kill()
        async with asyncio.timeout(30):
            await warned.wait()
    finally:
        logging.getLogger("kanal").removeHandler(handler)
        await layer.close()
    assert lines and all("connection" not in line for line in lines), lines


@pytest.mark.parametrize("json_lines", [False, True], ids=["text", "json"])
async def test_the_server_sets_connection_ids_only_for_json_lines(
    json_lines: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text lines show no connection id, so a connection's task does not pay for one."""
    monkeypatch.setattr(kanal._logging, "_json_lines", json_lines)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(CONNECTION.get()).encode()})

    async with LiveServer(app, lifespan="off") as server, httpx.AsyncClient() as http:
        body = (await http.get(f"{server.url}/")).text
    if json_lines:
        assert body != "None" and body.count("-") == 1
    else:
        assert body == "None"
