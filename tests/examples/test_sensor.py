"""The sensor example end to end with a WebSocket client: readings in, a command out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import websockets

from kanal.layers import BaseChannelLayer
from kanal.testing import LiveServer

from .sensor_fixtures import sensor_example


async def next_kind(ws: websockets.ClientConnection, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            data: dict[str, Any] = json.loads(await ws.recv())
            if data.get("kind") == kind:
                return data


async def test_readings_reach_the_page_and_a_command_reaches_the_device(
    live_server: Callable[..., Awaitable[LiveServer]],
    default_channel_layer: BaseChannelLayer,
) -> None:
    async with sensor_example(live_server) as example:
        url = f"{example.web.ws_url}/ws/sensors/"
        async with websockets.connect(url, origin=example.web.url) as ws:
            reading = await next_kind(ws, "reading")
            assert reading["device"] == "sensor-1" and 19 <= reading["temperature"] <= 23
            await ws.send(json.dumps({"device": "sensor-1", "command": "led on"}))
            async with asyncio.timeout(10):
                assert await example.device.commands.get() == "led on"
            # The device's state from before the command (retained, or published as it came
            # up) may still be on its way; the one that answers the command says led on.
            while (state := await next_kind(ws, "state"))["led"] is False:
                pass
            assert state == {"kind": "state", "device": "sensor-1", "led": True}
            await ws.send(json.dumps({"device": "sensor-1", "command": "self destruct"}))
            async with asyncio.timeout(10):
                while "error" not in (answer := json.loads(await ws.recv())):
                    assert answer["kind"] == "reading"  # only readings in between
