"""Channels next to kanal: its consumers on kanal's processes, its tests on kanal's layers.

A project that keeps Channels (or migrates one piece at a time) runs Channels' own
``WebsocketConsumer``, ``AsyncJsonWebsocketConsumer`` and ``SyncConsumer`` on ``kanal serve``
and ``kanal worker``, with kanal's Redis layer as ``CHANNEL_LAYERS``' ``BACKEND``; and its
test suite, written with ``channels.testing``, passes on kanal's layers under ``-W error``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import websockets
from _example import example_process

from kanal.testing import RedisServer, free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
KANAL = str(Path(sys.executable).with_name("kanal"))


@pytest.mark.parametrize("layer", ["memory", "redis"])
def test_channels_testing_passes_on_kanals_layers_under_w_error(
    layer: str, redis_server: RedisServer
) -> None:
    """``channels.testing``'s communicators, Channels' consumers, kanal's layer, ``-W error``.

    In a process of its own, so that ``-W error`` and ``-X dev`` cover imports, threads and
    the interpreter's exit (where an unclosed connection or a task never awaited shows).
    """
    url = "memory://" if layer == "memory" else redis_server.url.rsplit("/", 1)[0] + "/3"
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", str(HERE / "_channels_testing.py"), url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("passed"), done.stdout
    # -X dev also logs slow callbacks on a loaded machine: look for leaks, not for silence.
    for sign in ("Warning", "unclosed", "never awaited", "Task was destroyed", "Traceback"):
        assert sign not in done.stderr, done.stderr


async def recv_json(ws: websockets.ClientConnection) -> dict[str, object]:
    answer: dict[str, object] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return answer


async def test_channels_consumers_on_kanal_serve_and_kanal_worker(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/2"
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "PYTHONUNBUFFERED": "1",
        "TEST_CHANNELS_BACKEND": "1",
        "KANAL_LAYER": url,
    }
    port = free_port()
    app = "project.channels_asgi:application"
    serve = [KANAL, "serve", app, "--port", str(port)]
    work = [KANAL, "worker", app, "thumbnails"]
    async with (
        example_process(serve, env, "kanal server ready") as server,
        example_process(work, env, "worker listening on thumbnails") as worker,
    ):
        base = f"ws://127.0.0.1:{port}/ws"
        # channels.generic.websocket.WebsocketConsumer: a sync consumer.
        async with websockets.connect(f"{base}/shout/") as shout:
            await shout.send("hello")
            assert await asyncio.wait_for(shout.recv(), 10) == "HELLO"
        # AsyncJsonWebsocketConsumer with a group, on kanal's Redis layer.
        async with (
            websockets.connect(f"{base}/room/") as alice,
            websockets.connect(f"{base}/room/") as bob,
        ):
            await alice.send(json.dumps({"text": "hi bob"}))
            for ws in (alice, bob):
                assert await recv_json(ws) == {"text": "hi bob", "pid": server.pid}
            # A SyncConsumer on a worker channel, in the kanal worker process, answering
            # the sender's channel.
            await bob.send(json.dumps({"thumbnail": "cat"}))
            assert await recv_json(bob) == {"thumbnail": "CAT", "pid": worker.pid}
            await alice.send(json.dumps({"text": "still here"}))  # nothing else came first
            assert await recv_json(bob) == {"text": "still here", "pid": server.pid}
