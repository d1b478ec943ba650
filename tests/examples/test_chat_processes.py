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
                assert json.loads(await bob.recv()) == {"kind": "join", "name": "bob"}
                while json.loads(await ann.recv()) != {"kind": "join", "name": "bob"}:
                    pass
                await ann.send(json.dumps({"text": "across processes"}))
                line = json.loads(await bob.recv())
            assert (line["kind"], line["name"], line["text"]) == (
                "message",
                "ann",
                "across processes",
            )
        finally:
            await ann.close()
            await bob.close()
