"""The Channels tutorial chat ported to kanal (``examples/django_chat``), in headless Chromium.

Two users log in with Django's login page, enter a room and talk; each page shows its
user's name, and each line the sender's, which the WebSocket learnt from Django's session.
Once on ``manage.py runserver`` (kanal's), once on ``kanal serve --workers 2`` over Redis
with the two users' sockets in two different processes. Channels and Daphne cannot be
imported by the example's processes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from _example import USERS, example_env, example_process, prepare_database
from tests.browser import TIMEOUT_MS, chromium

from kanal.testing import RedisServer, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Pages bob opens at most to get a socket in the other process than alice's; each lands in
# one of two processes, so the chance that all of them share alice's is 2**-8.
BOB_TRIES = 8
KANAL = str(Path(sys.executable).with_name("kanal"))


async def log_in(browser: Any, base: str, name: str, room: str) -> Any:
    """A new browser context: Django's login page, then the room; the socket is open."""
    from playwright.async_api import expect

    page = await (await browser.new_context()).new_page()
    await page.goto(f"{base}/chat/{room}/")
    assert "/accounts/login/" in page.url  # login_required sent us there
    await page.fill("input[name=username]", name)
    await page.fill("input[name=password]", USERS[name])
    await page.click("#login-submit")
    await page.wait_for_url(f"{base}/chat/{room}/")
    await expect(page.locator("#user-name")).to_have_text(name)
    await expect(page.locator("body")).to_have_attribute("data-socket", "open", timeout=TIMEOUT_MS)
    return page


async def talk(alice: Any, bob: Any) -> None:
    """A line each way, with the sender's name as the server knows it."""
    from playwright.async_api import expect

    await alice.fill("#chat-message-input", "hello from alice")
    await alice.press("#chat-message-input", "Enter")
    for page in (alice, bob):
        await expect(page.locator("#chat-log")).to_have_value(
            "alice: hello from alice\n", timeout=TIMEOUT_MS
        )
    await bob.fill("#chat-message-input", "hi alice")
    await bob.click("#chat-message-submit")
    for page in (alice, bob):
        await expect(page.locator("#chat-log")).to_have_value(
            "alice: hello from alice\nbob: hi alice\n", timeout=TIMEOUT_MS
        )


async def test_chat_on_runserver(tmp_path: Path) -> None:

    env = example_env(tmp_path, KANAL_LAYER="memory://")
    prepare_database(env)
    port = free_port()
    command = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}"]
    async with example_process(command, env, "kanal server ready on"), chromium() as browser:
        base = f"http://127.0.0.1:{port}"
        alice = await log_in(browser, base, "alice", "lobby")
        bob = await log_in(browser, base, "bob", "lobby")
        await talk(alice, bob)
        # runserver serves static files in DEBUG, as Django's does.
        response = await alice.request.get(f"{base}/static/admin/css/base.css")
        assert response.status == 200 and "text/css" in response.headers["content-type"]


def member_processes(redis_url: str, group: str) -> list[str]:
    """The processes of a group's members, from the layer's sorted set in Redis."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        members: list[bytes] = []
        for key in client.scan_iter(match=f"*:g:{group}"):
            members.extend(client.zrange(key, 0, -1))
    finally:
        client.close()
    # "specific.<process>!<n>": the part before "!" names the process.
    return [member.decode().split("!")[0] for member in members]


@pytest.mark.redis
async def test_chat_on_kanal_serve_with_two_processes_over_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:

    layer_url = redis_server.url.rsplit("/", 1)[0] + "/5"  # a database of its own
    env = example_env(tmp_path, KANAL_LAYER=layer_url)
    prepare_database(env)
    port = free_port()
    command = [KANAL, "serve", "mysite.asgi:application", "--port", str(port), "--workers", "2"]
    async with example_process(command, env, "all 2 workers ready"), chromium() as browser:
        base = f"http://127.0.0.1:{port}"
        alice = await log_in(browser, base, "alice", "lobby")
        (alice_process,) = member_processes(layer_url, "chat_lobby")
        for _ in range(BOB_TRIES):
            bob = await log_in(browser, base, "bob", "lobby")
            processes = member_processes(layer_url, "chat_lobby")
            if len(set(processes)) == 2:
                break
            # Same process as alice: try another socket. (This one's membership may
            # linger a moment; it is in alice's process, so it cannot fake a second one.)
            await bob.context.close()
        else:
            pytest.fail(f"{BOB_TRIES} sockets of bob's all went to alice's process")
        assert alice_process in processes
        await talk(alice, bob)
