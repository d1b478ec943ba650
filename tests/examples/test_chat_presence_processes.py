"""Who is online in the chat across two server processes on Redis, one of them killed."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest
import websockets
from tests.child_process import child_process

from kanal.testing import RedisServer, apply_presence_diff, free_port

pytestmark = pytest.mark.redis

TTL = 1.0  # seconds a dead server's presences outlive it


class Page:
    """What the chat page keeps: the online list, from the snapshot and the diffs."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.online: dict[str, Any] = {}

    async def until(self, names: set[str], within: float) -> None:
        async with asyncio.timeout(within):
            while set(self.online) != names:
                event = json.loads(await self.ws.recv())
                if event.get("type") == "presence.diff":
                    apply_presence_diff(self.online, event)
                elif event.get("kind") == "presence":
                    self.online = event["state"]


async def test_a_killed_server_takes_its_people_off_the_list(redis_server: RedisServer) -> None:
    layer_url = redis_server.url.rsplit("/", 1)[0] + f"/6?presence_ttl={TTL}"
    ports = [free_port(), free_port()]
    env = {"KANAL_LAYER": layer_url}
    async with (
        child_process("-m", "examples.chat", "--port", str(ports[0]), env=env) as first,
        child_process("-m", "examples.chat", "--port", str(ports[1]), env=env) as second,
    ):
        for process in (first, second):
            await process.wait_for("ready on", within=15)

        async def page(port: int, name: str) -> Page:
            ws = await websockets.connect(
                f"ws://127.0.0.1:{port}/ws/chat/lobby/?name={name}&presence=1",
                origin=f"http://127.0.0.1:{port}",
            )
            return Page(ws)

        ann = await page(ports[0], "ann")
        bob = await page(ports[1], "bob")
        try:
            await ann.until({"ann", "bob"}, within=10)
            await bob.until({"ann", "bob"}, within=10)
            second.process.send_signal(signal.SIGKILL)  # no goodbye from bob's server
            await second.process.wait()
            # ann's server notices the lapse at a heartbeat: within TTL + TTL/3 + 0.1 s,
            # with room here for a loaded machine.
            await ann.until({"ann"}, within=TTL * 4 / 3 + 0.1 + 5)
        finally:
            await ann.ws.close()
            await bob.ws.close()  # its server is gone: this only releases the socket
