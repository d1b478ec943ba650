"""The chat across two server processes sharing a Redis channel layer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import websockets
from tests.child_process import child_process

from kanal.testing import RedisServer, free_port


@asynccontextmanager
async def chat_process(layer_url: str) -> AsyncIterator[int]:
    """``python -m examples.chat`` on a free port; yields the port once it listens."""
    port = free_port()
    command = child_process(
        "-m", "examples.chat", "--port", str(port), env={"KANAL_LAYER": layer_url}
    )
    async with command as process:
        await process.wait_for("ready on", within=15)
        yield port
        await process.stop()


async def open_room(port: int, name: str) -> websockets.ClientConnection:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/chat/lobby/?name={name}", origin=f"http://127.0.0.1:{port}"
    )
    assert json.loads(await ws.recv())["kind"] == "welcome"
    return ws


async def read_until(ws: websockets.ClientConnection, kind: str, name: str) -> dict[str, str]:
    """The next event of ``kind`` from ``name``, skipping the others.

    Join notices are gathered per room and process over a short period, so another member's
    notice may come before or after one's own; the test waits for the one it needs.
    """
    while True:
        event: dict[str, str] = json.loads(await ws.recv())
        if (event["kind"], event.get("name")) == (kind, name):
            return event


@pytest.mark.redis
async def test_a_line_reaches_members_connected_to_another_process(
    redis_server: RedisServer,
) -> None:
    layer_url = redis_server.url.rsplit("/", 1)[0] + "/3"  # a database of its own
    async with chat_process(layer_url) as port_a, chat_process(layer_url) as port_b:
        ann = await open_room(port_a, "ann")
        bob = await open_room(port_b, "bob")
        try:
            async with asyncio.timeout(10):
                # bob's own join notice proves his membership is in Redis; ann sees it too.
                await read_until(bob, "join", "bob")
                await read_until(ann, "join", "bob")
                await ann.send(json.dumps({"text": "across processes"}))
                line = await read_until(bob, "message", "ann")
            assert line["text"] == "across processes"
        finally:
            await ann.close()
            await bob.close()
