"""The chat's recovery in a real headless Chromium, on Redis: the server restarts under two
pages, a line is sent while one of them is away, and that page shows it once it is back,
exactly once; and both pages list who is online, before and after."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from examples.chat.app import application
from tests.browser import ARTIFACTS, TIMEOUT_MS, chromium

from kanal.layers import BaseChannelLayer, get_channel_layer, reset_channel_layers
from kanal.testing import LiveServer, RedisServer

pytestmark = [pytest.mark.browser, pytest.mark.redis]


@pytest.fixture
async def redis_layer(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[BaseChannelLayer]:
    """The process's shared layer on Redis (a database of its own), what the chat uses."""
    url = redis_server.url.rsplit("/", 1)[0] + "/5"
    monkeypatch.setenv("KANAL_LAYER", url)
    reset_channel_layers()
    layer = get_channel_layer()
    await layer.flush()
    try:
        yield layer
    finally:
        await layer.flush()
        await layer.close()
        reset_channel_layers()


async def test_a_page_away_during_a_restart_gets_the_line_it_missed_once(
    live_server: Callable[..., Awaitable[LiveServer]],
    redis_layer: BaseChannelLayer,
) -> None:
    from playwright.async_api import expect

    server = await live_server(application)
    async with chromium() as browser:
        contexts, pages = [], []
        for name in ("alice", "bob"):
            context = await browser.new_context(viewport={"width": 900, "height": 640})
            page = await context.new_page()
            await page.goto(f"{server.url}/rooms/lobby/?name={name}")
            await expect(page.locator("#status")).to_have_text("online", timeout=TIMEOUT_MS)
            contexts.append(context)
            pages.append(page)
        alice, bob = pages
        bob_lines = bob.locator("#messages li.message .text")
        for page in pages:
            await expect(page.locator("#online-list li")).to_have_text(
                ["alice", "bob"], timeout=TIMEOUT_MS
            )
        await alice.fill("#message-input", "before the restart")
        await alice.press("#message-input", "Enter")
        await expect(bob_lines).to_have_text(["before the restart"], timeout=TIMEOUT_MS)

        # The server goes away under both pages; bob's network is gone too, so that he
        # stays away while alice is back.
        port = server.port
        await contexts[1].set_offline(True)
        await server.stop()
        await expect(bob.locator("#status")).to_contain_text("offline", timeout=TIMEOUT_MS)
        await live_server(application, port=port)
        await expect(alice.locator("#status")).to_have_text("online", timeout=TIMEOUT_MS)
        await alice.fill("#message-input", "while bob was away")
        await alice.press("#message-input", "Enter")
        alice_lines = alice.locator("#messages li.message .text")
        await expect(alice_lines.last).to_have_text("while bob was away", timeout=TIMEOUT_MS)
        await expect(bob.locator("#status")).to_contain_text("offline")

        # bob is back: his page reconnects with the last position it saw.
        await contexts[1].set_offline(False)
        await expect(bob.locator("#status")).to_have_text("online", timeout=20_000)
        await expect(bob_lines).to_have_text(
            ["before the restart", "while bob was away"], timeout=TIMEOUT_MS
        )
        await alice.fill("#message-input", "after bob came back")
        await alice.press("#message-input", "Enter")
        # Exactly once each: the whole list, in order, nothing twice.
        await expect(bob_lines).to_have_text(
            ["before the restart", "while bob was away", "after bob came back"],
            timeout=TIMEOUT_MS,
        )
        await expect(bob.locator("#messages li.error")).to_have_count(0)
        # Who is online is right again on both pages after the restart.
        for page in pages:
            await expect(page.locator("#online-list li")).to_have_text(
                ["alice", "bob"], timeout=TIMEOUT_MS
            )
        await bob.screenshot(path=str(ARTIFACTS / "chat-bob-recovered.png"))
