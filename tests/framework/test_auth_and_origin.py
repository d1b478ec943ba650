"""Authentication (session and bearer-token loaders, login/logout) and the origin check."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from kanal.consumers import AsyncHttpConsumer, AsyncWebsocketConsumer
from kanal.exceptions import ConfigError
from kanal.middleware import (
    AllowedOriginsMiddleware,
    AnonymousUser,
    AuthMiddleware,
    BearerTokenUserLoader,
    MemorySessionStore,
    ServerSideSessions,
    SessionMiddleware,
    SessionUserLoader,
    login,
    logout,
    origin_allowed,
)
from kanal.testing import HttpCommunicator, WebsocketCommunicator, bearer_headers, login_headers


@dataclass(frozen=True)
class User:
    id: int
    name: str
    is_authenticated: bool = True


USERS = {"1": User(1, "alice"), "2": User(2, "bob")}
TOKENS = {"tok-bob": USERS["2"]}


async def load_user(user_id: str) -> User | None:
    return USERS.get(user_id)


async def verify_token(token: str) -> User | None:
    return TOKENS.get(token)


class WhoAmI(AsyncWebsocketConsumer):
    uses_channel_layer = False

    async def connect(self) -> None:
        await self.accept()
        user = self.scope["user"]
        await self.send(text_data=getattr(user, "name", "anonymous"))


class LoginView(AsyncHttpConsumer):
    """POST /login logs alice in; POST /logout logs out; both report the user."""

    uses_channel_layer = False

    async def handle(self, body: bytes) -> None:
        if self.scope["path"] == "/login":
            await login(self.scope, USERS["1"])
        else:
            await logout(self.scope)
        user = self.scope["user"]
        await self.send_response(200, getattr(user, "name", "anonymous").encode())


def stack(app: Any, backend: ServerSideSessions) -> Any:
    return SessionMiddleware(
        AuthMiddleware(app, [SessionUserLoader(load_user), BearerTokenUserLoader(verify_token)]),
        backend,
    )


async def who(app: Any, path: str = "/ws/", headers: Any = None) -> str:
    communicator = WebsocketCommunicator(app, path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    name = await communicator.receive_from()
    await communicator.disconnect()
    assert isinstance(name, str)
    return name


async def test_session_and_bearer_users_and_anonymous() -> None:
    backend = ServerSideSessions(MemorySessionStore())
    app = stack(WhoAmI.as_asgi(), backend)
    assert await who(app) == "anonymous"
    assert await who(app, headers=await login_headers(backend, USERS["1"])) == "alice"
    assert await who(app, headers=bearer_headers("tok-bob")) == "bob"
    assert await who(app, headers=bearer_headers("wrong")) == "anonymous"
    assert await who(app, headers=await login_headers(backend, user_id="99")) == "anonymous"


async def test_token_in_query_string_only_when_enabled() -> None:
    strict = AuthMiddleware(WhoAmI.as_asgi(), BearerTokenUserLoader(verify_token))
    lenient = AuthMiddleware(
        WhoAmI.as_asgi(), BearerTokenUserLoader(verify_token, query_param="access_token")
    )
    assert await who(strict, "/ws/?access_token=tok-bob") == "anonymous"
    assert await who(lenient, "/ws/?access_token=tok-bob") == "bob"


async def test_failing_loader_makes_the_connection_anonymous(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(user_id: str) -> User:
        raise ConnectionError("user database down")

    app = SessionMiddleware(
        AuthMiddleware(WhoAmI.as_asgi(), SessionUserLoader(broken)),
        ServerSideSessions(MemorySessionStore()),
    )
    backend = app.backend
    assert isinstance(backend, ServerSideSessions)
    with caplog.at_level(logging.ERROR, logger="kanal.middleware"):
        name = await who(app, headers=await login_headers(backend, USERS["1"]))
    assert name == "anonymous"
    assert "user database down" in caplog.text


async def test_session_loader_without_session_middleware_is_a_clear_error() -> None:
    app = AuthMiddleware(WhoAmI.as_asgi(), SessionUserLoader(load_user))
    communicator = WebsocketCommunicator(app, "/ws/")
    with pytest.raises(ConfigError, match="put SessionMiddleware outside"):
        await communicator.connect()


async def test_login_rotates_the_session_key_and_logout_forgets_it() -> None:
    store = MemorySessionStore()
    backend = ServerSideSessions(store)
    app = stack(LoginView.as_asgi(), backend)
    before = await login_headers(backend, user_id="2")  # an existing session (bob)
    old_key = before[0][1].split(b"=", 1)[1].decode()

    response = await HttpCommunicator(app, "POST", "/login", headers=before).get_response()
    assert response["body"] == b"alice"
    cookie = dict(response["headers"])[b"set-cookie"].split(b";")[0]
    new_key = cookie.split(b"=", 1)[1].decode()
    assert new_key != old_key
    assert await store.load(old_key) is None
    assert await store.load(new_key) == {"_auth_user_id": "1"}

    response = await HttpCommunicator(
        app, "POST", "/logout", headers=[(b"cookie", cookie)]
    ).get_response()
    assert response["body"] == b"anonymous"
    assert b"Max-Age=0" in dict(response["headers"])[b"set-cookie"]
    assert await store.load(new_key) is None
    assert AnonymousUser() == AnonymousUser()


@pytest.mark.parametrize(
    ("origin", "allowed", "expected"),
    [
        ("https://example.com", ["https://example.com"], True),
        ("https://example.com:443", ["https://example.com"], True),
        ("http://example.com", ["https://example.com"], False),
        ("https://chat.example.com", ["https://*.example.com"], True),
        ("https://a.b.example.com", ["https://*.example.com"], True),
        ("https://example.com", ["https://*.example.com"], False),
        ("https://evil-example.com", ["https://*.example.com"], False),
        ("http://localhost:5173", ["http://localhost:*"], True),
        ("http://localhost:5173", ["http://localhost"], False),
        ("null", ["https://example.com"], False),
        ("anything://x", ["*"], True),
    ],
)
def test_origin_patterns(origin: str, allowed: list[str], expected: bool) -> None:
    assert origin_allowed(origin, allowed) is expected


async def test_origin_middleware_refuses_foreign_and_missing_origins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = AllowedOriginsMiddleware(WhoAmI.as_asgi(), ["https://*.example.com"])
    ok = WebsocketCommunicator(
        app, "/ws/", headers=[("origin", "https://chat.example.com")], scope={"user": None}
    )
    assert (await ok.connect())[0] is True
    await ok.disconnect()
    with caplog.at_level(logging.WARNING, logger="kanal.middleware"):
        evil = WebsocketCommunicator(app, "/ws/", headers=[("origin", "https://evil.com")])
        assert (await evil.connect())[0] is False
    assert "origin 'https://evil.com' is not in" in caplog.text
    missing = WebsocketCommunicator(app, "/ws/")
    assert (await missing.connect())[0] is False
    lenient = AllowedOriginsMiddleware(WhoAmI.as_asgi(), ["https://x.org"], allow_missing=True)
    no_origin = WebsocketCommunicator(lenient, "/ws/", scope={"user": AnonymousUser()})
    assert (await no_origin.connect())[0] is True
    await no_origin.disconnect()


def test_bad_allowed_origin_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'example\.com' is not like"):
        AllowedOriginsMiddleware(WhoAmI.as_asgi(), ["example.com"])
