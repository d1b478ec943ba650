"""The dashboard in a real headless Chromium, over the chat example under load: two server
processes, WebSocket clients in two rooms sending lines while the page is open."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
import websockets
from tests.browser import ARTIFACTS, chromium
from tests.child_process import child_process

from kanal.testing import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT_MS = 15_000  # the page polls every second or two, under load
TOKEN = "dashboard-test-token"
ROOMS = {"lobby": 4, "kitchen": 2}


async def join(port: int, room: str, name: str) -> websockets.ClientConnection:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/chat/{room}/?name={name}", origin=f"http://127.0.0.1:{port}"
    )
    assert json.loads(await ws.recv())["kind"] == "welcome"
    return ws


async def chatter(sockets: list[websockets.ClientConnection], stop: asyncio.Event) -> int:
    """Each client sends a line in turn and everyone reads what arrives, until ``stop``."""

    async def drain(ws: websockets.ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in ws:
                pass

    readers = [asyncio.create_task(drain(ws)) for ws in sockets]
    sent = 0
    try:
        while not stop.is_set():
            for ws in sockets:
                await ws.send(json.dumps({"text": f"line {sent}"}))
                sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)  # about 120 lines a second
    finally:
        for task in readers:
            task.cancel()
    return sent


async def test_the_dashboard_shows_the_chat_s_connections_rates_and_groups(
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    port, metrics = free_port(), free_port()
    async with child_process(
        "-m",
        "kanal.cli",
        "serve",
        "examples.chat.app:application",
        "--port",
        str(port),
        "--workers",
        "2",
        "--metrics",
        str(metrics),
        "--dashboard",
        # The two processes share an ipc:// layer of the test's own.
        env={"KANAL_DASHBOARD_TOKEN": TOKEN, "KANAL_LAYER": f"ipc://{tmp_path / 'layer'}"},
    ) as server:
        found = await server.wait_for(r"kanal dashboard on (http://\S+/dashboard)#token=")
        assert TOKEN not in found.string  # a token given by the environment is not logged
        await server.wait_for("all 2 workers ready")
        sockets = [
            await join(port, room, f"{room}{i}")
            for room, count in ROOMS.items()
            for i in range(count)
        ]
        stop = asyncio.Event()
        load = asyncio.create_task(chatter(sockets, stop))
        try:
            async with chromium() as browser:
                page = await browser.new_page(viewport={"width": 1200, "height": 900})
                await page.goto(f"{found.group(1)}#token=wrong")
                await expect(page.locator("#status")).to_have_text(
                    "token needed", timeout=TIMEOUT_MS
                )
                await page.goto(f"{found.group(1)}#token={TOKEN}")
                await expect(page.locator("#status")).to_have_text("live", timeout=TIMEOUT_MS)
                total = sum(ROOMS.values())
                await expect(page.locator("#tile-websockets")).to_have_text(
                    str(total), timeout=TIMEOUT_MS
                )
                await expect(page.locator("#tile-processes")).to_have_text("2")
                # Both processes listed, their WebSockets adding up to the clients.
                rows = page.locator("#processes tbody tr")
                await expect(rows).to_have_count(2)
                counts = [int(t) for t in await rows.locator("td:nth-child(4)").all_inner_texts()]
                assert sum(counts) == total
                # The rooms, largest first, members counted over both processes.
                groups = page.locator("#groups tbody tr")
                await expect(groups.nth(0).locator("td").nth(0)).to_have_text("chat.lobby")
                await expect(groups.nth(0).locator("td").nth(1)).to_have_text("4")
                await expect(groups.nth(1).locator("td").nth(0)).to_have_text("chat.kitchen")
                await expect(groups.nth(1).locator("td").nth(1)).to_have_text("2")
                # Under load: the message rate is drawn from two polls, and is not zero.
                rate = page.locator("#tile-message-rate")
                await expect(rate).not_to_have_text("0", timeout=TIMEOUT_MS)
                await expect(rate).not_to_have_text("-")
                assert float(await rate.inner_text()) > 0
                await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            stop.set()
            sent = await load
            for ws in sockets:
                await ws.close()
        assert sent > 0
        assert await server.stop() == 0
