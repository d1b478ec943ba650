"""The sensor example in a real headless Chromium: live readings, and a button that reaches
the device through the broker and comes back as its new state."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import pytest
from tests.browser import ARTIFACTS, TIMEOUT_MS, chromium

from kanal.layers import BaseChannelLayer
from kanal.testing import LiveServer

from .sensor_fixtures import sensor_example

pytestmark = pytest.mark.browser


async def test_the_page_shows_readings_and_its_button_commands_the_device(
    live_server: Callable[..., Awaitable[LiveServer]],
    default_channel_layer: BaseChannelLayer,
) -> None:
    from playwright.async_api import expect

    async with sensor_example(live_server) as example, chromium() as browser:
        page = await browser.new_page()
        await page.goto(example.web.url + "/")
        await expect(page.locator("#status")).to_have_text("online", timeout=TIMEOUT_MS)
        # Live: the count of readings keeps going up.
        await expect(page.locator("#count")).not_to_have_text("0", timeout=TIMEOUT_MS)
        first = int(await page.locator("#count").text_content() or "0")
        await expect(page.locator("#count")).not_to_have_text(str(first), timeout=TIMEOUT_MS)
        await expect(page.locator("#temperature")).to_have_text(
            re.compile(r"^\d+\.\d\d$"), timeout=TIMEOUT_MS
        )
        assert example.device.led is False
        await page.click("#toggle")
        await expect(page.locator("#led")).to_have_text("on", timeout=TIMEOUT_MS)
        assert example.device.led is True
        await page.screenshot(path=str(ARTIFACTS / "sensor-led-on.png"))
        await page.click("#toggle")
        await expect(page.locator("#led")).to_have_text("off", timeout=TIMEOUT_MS)
        assert example.device.led is False
