"""The decoupled mode as real processes on a real Redis: a worker killed with SIGKILL, and
the chat example through a worker restart."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from tests.bridge.test_failures import closed_with
from tests.child_process import ChildProcess, child_process
from websockets.asyncio.client import ClientConnection, connect

from kanal.testing import RedisServer, free_port

pytestmark = pytest.mark.redis

HERE = Path(__file__).resolve().parent
WORKER_READY = "bridge worker taking connections"


@asynccontextmanager
async def kanal(layer_url: str, *args: str, ready: str) -> AsyncIterator[ChildProcess]:
    """``kanal ARGS...`` on the layer at ``layer_url``, once it has logged ``ready``."""
    command = child_process("-m", "kanal.cli", *args, env={"KANAL_LAYER": layer_url}, path=(HERE,))
    async with command as process:
        await process.wait_for(re.escape(ready), within=15)
        yield process


async def test_a_killed_worker_is_noticed_and_its_clients_move_on(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = ("serve", "--bridge", "--host", "127.0.0.1", "--port", str(port))
    worker = ("worker", "--bridge", "process_apps:application")
    async with (
        kanal(url, *serve, ready="ready on") as server,
        kanal(url, *worker, ready=WORKER_READY) as first,
        httpx.AsyncClient(timeout=30) as client,
    ):
        sockets = [await connect(f"ws://127.0.0.1:{port}/ws") for _ in range(3)]
        for n, ws in enumerate(sockets):
            await ws.send(f"hi{n}")
            assert await ws.recv() == f"hi{n}:{first.pid}"
        slow = asyncio.create_task(client.get(f"{base}/slow"))  # held by the first worker
        async with kanal(url, *worker, ready=WORKER_READY) as second:
            assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
            # The request the dead worker held is answered 503 once the server notices;
            # its WebSockets were announced again at that same moment.
            async with asyncio.timeout(15):
                response = await slow
            assert response.status_code == 503
            for n, ws in enumerate(sockets):
                await ws.send(f"again{n}")
                async with asyncio.timeout(10):
                    assert await ws.recv() == f"again{n}:{second.pid}"
            # The last worker dies too, with nobody to take over: 1012, try to reconnect.
            assert await second.stop(signal.SIGKILL) == -signal.SIGKILL
            for ws in sockets:
                assert await closed_with(ws, within=20) == 1012
        assert (await client.get(f"{base}/")).status_code == 503  # no worker at all
    log = "\n".join(server.log)
    assert "taken as dead" in log
    assert "closed with 1012" in log


async def chat_member(port: int, name: str) -> ClientConnection:
    ws = await connect(
        f"ws://127.0.0.1:{port}/ws/chat/lobby/?name={name}", origin=f"http://127.0.0.1:{port}"
    )
    async with asyncio.timeout(10):
        welcome = json.loads(await ws.recv())
    welcome.pop("position", None)  # the room's, from its history
    assert welcome == {"kind": "welcome", "name": name, "room": "lobby"}
    return ws


async def next_event(ws: ClientConnection) -> dict[str, object]:
    async with asyncio.timeout(10):
        event: dict[str, object] = json.loads(await ws.recv())
    event.pop("time", None)
    event.pop("position", None)  # each line's and notice's, from the room's history
    return event


async def test_the_chat_through_a_worker_restart_sends_no_second_welcome_or_join(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/4"  # a database of its own
    port = free_port()
    serve = ("serve", "--bridge", "--host", "127.0.0.1", "--port", str(port))
    worker = ("worker", "--bridge", "examples.chat.app:application")
    async with kanal(url, *serve, ready="ready on"):
        async with kanal(url, *worker, ready=WORKER_READY) as first:
            ann = await chat_member(port, "ann")
            assert await next_event(ann) == {"kind": "join", "name": "ann"}
            bob = await chat_member(port, "bob")
            assert await next_event(bob) == {"kind": "join", "name": "bob"}
            assert await next_event(ann) == {"kind": "join", "name": "bob"}
            assert await first.stop() == 0  # SIGTERM: both connections are handed over
            assert any("2 handed over" in line for line in first.log), first.log
        await ann.send(json.dumps({"text": "anyone there?"}))  # held by the server
        async with kanal(url, *worker, ready=WORKER_READY):
            # The first thing either sees after the restart is ann's line: no welcome, no
            # join notice again, and ann is still ann.
            line = {"kind": "message", "name": "ann", "text": "anyone there?"}
            assert await next_event(ann) == line
            assert await next_event(bob) == line
            # The room still works both ways, and for newcomers.
            await bob.send(json.dumps({"text": "still here"}))
            line = {"kind": "message", "name": "bob", "text": "still here"}
            assert await next_event(ann) == line
            assert await next_event(bob) == line
            carl = await chat_member(port, "carl")
            for ws in (ann, bob, carl):
                assert await next_event(ws) == {"kind": "join", "name": "carl"}
            for ws in (ann, bob, carl):
                await ws.close()


async def test_the_worker_s_lines_about_a_connection_carry_the_server_s_id_for_it(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    port = free_port()
    serve = ("serve", "--bridge", "--port", str(port), "--access-log", "--log-format", "json")
    worker = ("worker", "--bridge", "process_apps:application", "--log-format", "json")
    async with (
        kanal(url, *serve, ready="ready on") as server,
        kanal(url, *worker, ready=WORKER_READY) as bridge_worker,
    ):
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("hi")
            assert await ws.recv() == f"hi:{bridge_worker.pid}"
        await server.wait_for(re.escape('"WEBSOCKET /ws'))
    handshake = [json.loads(line) for line in server.log if '"WEBSOCKET /ws' in line]
    handled = [json.loads(line) for line in bridge_worker.log if "worker saw hi" in line]
    assert len(handshake) == len(handled) == 1
    assert handled[0]["connection"] == handshake[0]["connection"]
    assert handled[0]["pid"] != handshake[0]["pid"]
