"""Who is online in the chat, in a real headless Chromium: two pages list each other, a
second tab of one name is one person with two connections, and a closed page leaves the
list."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest
from examples.chat.app import application
from tests.browser import ARTIFACTS, TIMEOUT_MS, chromium

from kanal.layers import BaseChannelLayer
from kanal.testing import LiveServer

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = pytest.mark.browser


async def test_the_online_list_follows_the_room(
    live_server: Callable[..., Awaitable[LiveServer]],
    default_channel_layer: BaseChannelLayer,
) -> None:
    from playwright.async_api import expect

    server = await live_server(application)
    async with chromium() as browser:

        async def open_page(name: str, room: str = "lobby") -> Page:
            context = await browser.new_context(viewport={"width": 1000, "height": 640})
            page = await context.new_page()
            await page.goto(f"{server.url}/rooms/{room}/?name={name}")
            await expect(page.locator("#status")).to_have_text("online", timeout=TIMEOUT_MS)
            return page

        alice = await open_page("alice")
        alice_list = alice.locator("#online-list li")
        await expect(alice_list).to_have_text(["alice"], timeout=TIMEOUT_MS)
        bob = await open_page("bob")
        bob_list = bob.locator("#online-list li")
        # Each page learns of the other: bob from the list sent on connecting, alice
        # from the diff of bob's join.
        await expect(bob_list).to_have_text(["alice", "bob"], timeout=TIMEOUT_MS)
        await expect(alice_list).to_have_text(["alice", "bob"], timeout=TIMEOUT_MS)
        await expect(alice.locator("#online-count")).to_have_text("2")
        # Another room's people are not listed here.
        carol = await open_page("carol", room="kitchen")
        await expect(carol.locator("#online-list li")).to_have_text(["carol"])
        # A second tab of bob's: one person (one line), two connections.
        bob_again = await open_page("bob")
        bob_line = alice_list.filter(has_text="bob")
        await expect(bob_line).to_have_attribute("title", "2 connections", timeout=TIMEOUT_MS)
        await expect(alice_list).to_have_text(["alice", "bob"])
        await alice.screenshot(path=str(ARTIFACTS / "chat-online.png"))
        await bob_again.close()
        await expect(bob_line).to_have_attribute("title", "1 connection", timeout=TIMEOUT_MS)
        await bob.close()
        await expect(alice_list).to_have_text(["alice"], timeout=TIMEOUT_MS)
        assert list(await default_channel_layer.presence("chat.lobby.online")) == ["alice"]
