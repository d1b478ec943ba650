"""The chat in a real headless Chromium: two pages in a room talk, a third room hears nothing,
and the pages reconnect by themselves when the server restarts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from examples.chat.app import application
from tests.browser import ARTIFACTS, TIMEOUT_MS, chromium

from kanal.layers import BaseChannelLayer
from kanal.testing import LiveServer

pytestmark = pytest.mark.browser


async def test_chat_between_two_pages_and_not_a_third(
    live_server: Callable[..., Awaitable[LiveServer]],
    default_channel_layer: BaseChannelLayer,
) -> None:
    from playwright.async_api import expect

    server = await live_server(application)
    async with chromium() as browser:
        pages = {}
        for name, room in (("alice", "lobby"), ("bob", "lobby"), ("carol", "kitchen")):
            # One context each: separate storage, like three people's browsers.
            context = await browser.new_context(viewport={"width": 900, "height": 640})
            page = await context.new_page()
            await page.goto(f"{server.url}/rooms/{room}/?name={name}")
            await expect(page.locator("#status")).to_have_text("online", timeout=TIMEOUT_MS)
            await expect(page.locator("#join-form")).to_be_hidden()
            await expect(page.locator("#room-label")).to_have_text(f"#{room}")
            pages[name] = page
        alice, bob, carol = pages["alice"], pages["bob"], pages["carol"]
        await expect(alice.locator("#messages")).to_contain_text("bob joined")

        await alice.fill("#message-input", "hello from alice")
        await alice.press("#message-input", "Enter")
        bob_lines = bob.locator("#messages li.message")
        await expect(bob_lines.last).to_contain_text("alice", timeout=TIMEOUT_MS)
        await expect(bob_lines.last.locator(".text")).to_have_text("hello from alice")

        # carol's own line reaches her page; alice's never does, and bob never sees carol's.
        await carol.fill("#message-input", "carol in the kitchen")
        await carol.click("#send")
        carol_lines = carol.locator("#messages li.message .text")
        await expect(carol_lines).to_have_text(["carol in the kitchen"], timeout=TIMEOUT_MS)
        await alice.fill("#message-input", "second line")
        await alice.press("#message-input", "Enter")
        await expect(bob_lines.locator(".text")).to_have_text(
            ["hello from alice", "second line"], timeout=TIMEOUT_MS
        )
        await expect(carol_lines).to_have_text(["carol in the kitchen"])
        await bob.screenshot(path=str(ARTIFACTS / "chat-bob.png"))

        # The way in without a prepared URL: the form on the front page.
        dave = await (await browser.new_context()).new_page()
        await dave.goto(server.url + "/")
        await expect(dave.locator("#join-form")).to_be_visible()
        await dave.screenshot(path=str(ARTIFACTS / "chat-front-page.png"))
        await dave.fill("#name-input", "dave")
        await dave.fill("#room-input", "kitchen")
        await dave.click("#join-form button")
        await expect(dave.locator("#status")).to_have_text("online", timeout=TIMEOUT_MS)
        assert dave.url == f"{server.url}/rooms/kitchen/"
        await expect(carol.locator("#messages")).to_contain_text("dave joined")
        await dave.fill("#message-input", "dave says hi")
        await dave.press("#message-input", "Enter")
        await expect(carol_lines.last).to_have_text("dave says hi", timeout=TIMEOUT_MS)
        await carol.screenshot(path=str(ARTIFACTS / "chat-carol.png"))

        # Restart the server on the same port: the pages go offline, then come back.
        port = server.port
        await server.stop()
        await expect(bob.locator("#status")).to_contain_text("offline", timeout=TIMEOUT_MS)
        await live_server(application, port=port)
        for page in (alice, bob):
            await expect(page.locator("#status")).to_have_text("online", timeout=TIMEOUT_MS)
        await alice.fill("#message-input", "after the restart")
        await alice.press("#message-input", "Enter")
        await expect(bob_lines.last.locator(".text")).to_have_text(
            "after the restart", timeout=TIMEOUT_MS
        )
        await bob.screenshot(path=str(ARTIFACTS / "chat-bob-after-restart.png"))
