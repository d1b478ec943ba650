"""Django's sessions and users on WebSockets: the session a view wrote is the socket's."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from kanal.consumers import AsyncJsonWebsocketConsumer
from kanal.django import (
    AuthMiddlewareStack,
    DjangoSession,
    database_sync_to_async,
    login,
    logout,
)
from kanal.testing import WebsocketCommunicator

pytestmark = pytest.mark.usefixtures("kanal_django")

# Seconds for a reply: logging in writes to the database several times, from threads, on a
# machine that may be running the rest of the suite.
TIMEOUT = 10


class WhoAmI(AsyncJsonWebsocketConsumer):
    """Says who ``scope["user"]`` is; logs in and out on request, before or after accept."""

    uses_channel_layer = False

    async def connect(self) -> None:
        if "login-first" in self.scope["path"]:
            await login(self.scope, await get_user_named("carol"))
        await self.accept()
        await self.send_json(self.describe())

    def describe(self) -> dict[str, Any]:
        user = self.scope["user"]
        return {
            "user": user.username,
            "authenticated": user.is_authenticated,
            "django_anonymous": type(user).__module__ == "django.contrib.auth.models"
            and not user.is_authenticated,
        }

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content == "login":
            await login(self.scope, await get_user_named("carol"))
            await self.send_json({"key": self.scope["session"].session_key})
        elif content == "logout":
            await logout(self.scope)
        elif content == "channels-style-save":
            # What Channels' documentation writes, unchanged.
            self.scope["session"]["seed"] = 42
            await database_sync_to_async(self.scope["session"].save)()
        await self.send_json(self.describe())


@database_sync_to_async
def get_user_named(name: str) -> Any:
    from django.contrib.auth.models import User

    user, _ = User.objects.get_or_create(username=name)
    user.set_password(f"{name}-password")
    user.save()
    return user


@database_sync_to_async
def view_login(name: str) -> str:
    """Log ``name`` in as a Django view does (Client.force_login); return the session key."""
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    user, _ = User.objects.get_or_create(username=name)
    client = Client()
    client.force_login(user)
    key: str = client.cookies[settings.SESSION_COOKIE_NAME].value
    return key


@database_sync_to_async
def stored(key: str) -> dict[str, Any] | None:
    """What Django's session engine holds for ``key`` (``None``: nothing)."""
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore(key)
    data = session.load()
    return dict(data) if session.session_key else None


@database_sync_to_async
def user_of_session(key: str) -> str:
    """The user a Django view would see with the cookie ``key``."""
    from django.contrib.auth import get_user
    from django.contrib.sessions.backends.db import SessionStore
    from django.http import HttpRequest

    request = HttpRequest()
    request.session = SessionStore(key)
    username: str = get_user(request).username
    return username


def communicator(path: str = "/ws/", key: str | None = None) -> WebsocketCommunicator:
    headers = [(b"cookie", f"sessionid={key}".encode())] if key else []
    return WebsocketCommunicator(AuthMiddlewareStack(WhoAmI.as_asgi()), path, headers=headers)


def new_session_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"set-cookie" and value.startswith(b"sessionid="):
            return value.split(b";")[0].split(b"=", 1)[1].decode()
    return None


async def test_the_user_a_view_logged_in_is_scope_user() -> None:
    key = await view_login("alice")
    ws = communicator(key=key)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    assert await ws.receive_json_from(timeout=TIMEOUT) == {
        "user": "alice",
        "authenticated": True,
        "django_anonymous": False,
    }
    await ws.disconnect()


async def test_nobody_is_djangos_anonymous_user() -> None:
    for ws in (communicator(), communicator(key="not-a-session-key-at-all")):
        assert (await ws.connect(timeout=TIMEOUT))[0]
        assert await ws.receive_json_from(timeout=TIMEOUT) == {
            "user": "",
            "authenticated": False,
            "django_anonymous": True,
        }
        await ws.disconnect()


async def test_a_password_change_ends_the_sessions_of_the_user() -> None:
    key = await view_login("dora")

    @database_sync_to_async
    def change_password() -> None:
        from django.contrib.auth.models import User

        user = User.objects.get(username="dora")
        user.set_password("a new one")
        user.save()

    await change_password()
    ws = communicator(key=key)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    assert (await ws.receive_json_from(timeout=TIMEOUT))["authenticated"] is False
    await ws.disconnect()
    assert await stored(key) is None  # flushed, as Django's get_user flushes it


async def test_login_before_accept_sends_the_new_cookie_and_saves_the_session() -> None:
    ws = communicator("/ws/login-first/")
    connected, _ = await ws.connect(timeout=TIMEOUT)
    assert connected
    assert (await ws.receive_json_from(timeout=TIMEOUT))["user"] == "carol"
    await ws.disconnect()
    key = new_session_key(ws.response_headers)
    assert key is not None and len(key) == 32
    assert await user_of_session(key) == "carol"  # a Django view sees the login


async def test_login_after_accept_saves_the_session_and_says_the_cookie_is_old(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = await view_login("erin")
    ws = communicator(key=key)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    await ws.receive_json_from(timeout=TIMEOUT)
    with caplog.at_level(logging.WARNING, logger="kanal.django"):
        await ws.send_json_to("login")
        new_key = (await ws.receive_json_from(timeout=TIMEOUT))["key"]
        assert (await ws.receive_json_from(timeout=TIMEOUT))["user"] == "carol"
    assert "lasts only as long as this connection" in caplog.text
    # erin's session was replaced (new key, against fixation): her cookie names nothing now,
    # and the new one, saved, is carol's.
    assert await stored(key) is None
    assert new_key != key and await user_of_session(new_key) == "carol"
    await ws.disconnect()


async def test_logout_after_accept_logs_the_browser_out() -> None:
    key = await view_login("fred")
    ws = communicator(key=key)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    assert (await ws.receive_json_from(timeout=TIMEOUT))["user"] == "fred"
    await ws.send_json_to("logout")
    assert await ws.receive_json_from(timeout=TIMEOUT) == {
        "user": "",
        "authenticated": False,
        "django_anonymous": True,
    }
    await ws.disconnect()
    assert await stored(key) is None
    assert await user_of_session(key) == ""  # the view sees nobody with that cookie


async def test_channels_style_session_save_from_a_thread() -> None:
    key = await view_login("gina")
    ws = communicator(key=key)
    assert (await ws.connect(timeout=TIMEOUT))[0]
    await ws.receive_json_from(timeout=TIMEOUT)
    await ws.send_json_to("channels-style-save")
    assert (await ws.receive_json_from(timeout=TIMEOUT))["user"] == "gina"
    data = await stored(key)
    assert data is not None and data["seed"] == 42
    await ws.disconnect()


async def test_scope_session_is_the_django_session() -> None:
    key = await view_login("hugo")
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["session"] = scope["session"]
        await receive()
        await send({"type": "websocket.close"})

    ws = WebsocketCommunicator(
        AuthMiddlewareStack(app), "/", headers=[(b"cookie", f"sessionid={key}".encode())]
    )
    await ws.connect(timeout=TIMEOUT)
    session = seen["session"]
    assert isinstance(session, DjangoSession)
    assert session.session_key == key
    assert session["_auth_user_id"] == str((await get_user_named("hugo")).pk)
    await ws.disconnect()
