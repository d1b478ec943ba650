"""The chat across two server processes sharing a Redis channel layer."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import websockets

from kanal.testing import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def chat_process(layer_url: str) -> AsyncIterator[int]:
    """``python -m examples.chat`` on a free port; yields the port once it listens."""
    port = free_port()
    env = dict(os.environ, KANAL_LAYER=layer_url, PYTHONUNBUFFERED="1")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.chat",
        "--port",
        str(port),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(15):
            while b"ready on" not in (line := await process.stderr.readline()):
                if not line:
                    raise AssertionError(f"the chat process exited with {await process.wait()}")
        yield port
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


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
