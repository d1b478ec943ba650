"""Cookies and sessions: signed cookies, server-side stores (memory, real Redis), WebSocket."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from kanal.consumers import AsyncHttpConsumer, AsyncWebsocketConsumer
from kanal.exceptions import SessionError
from kanal.middleware import (
    CookieMiddleware,
    MemorySessionStore,
    RedisSessionStore,
    ServerSideSessions,
    SessionBackend,
    SessionMiddleware,
    SignedCookieSessions,
    format_set_cookie,
    parse_cookies,
)
from kanal.testing import HttpCommunicator, RedisServer, WebsocketCommunicator

SECRET = "a-test-secret-of-enough-length"


def test_parse_cookies_survives_odd_cookies() -> None:
    assert parse_cookies('a=1; b="two"; junk; c=3=3; a=shadowed') == {
        "a": "1",
        "b": "two",
        "": "junk",
        "c": "3=3",
    }


def test_format_set_cookie() -> None:
    header = format_set_cookie("s", "v", max_age=10, secure=True, samesite="strict")
    assert header == b"s=v; HttpOnly; Max-Age=10; Path=/; SameSite=Strict; Secure"


class Counter(AsyncHttpConsumer):
    """Counts visits in the session and reports the count."""

    uses_channel_layer = False

    async def handle(self, body: bytes) -> None:
        session = self.scope["session"]
        session["visits"] = session.get("visits", 0) + 1
        await self.send_response(200, str(session["visits"]).encode())


def cookie_from(response: dict[str, Any]) -> tuple[bytes, bytes] | None:
    for name, value in response["headers"]:
        if name == b"set-cookie":
            return (b"cookie", value.split(b";", 1)[0])
    return None


async def visit(app: Any, cookie: tuple[bytes, bytes] | None) -> dict[str, Any]:
    headers = [cookie] if cookie else []
    return await HttpCommunicator(app, "GET", "/", headers=headers).get_response()


@pytest.mark.parametrize("kind", ["signed", "memory"])
async def test_http_session_round_trip(kind: str) -> None:
    backend: SessionBackend = (
        SignedCookieSessions(SECRET)
        if kind == "signed"
        else ServerSideSessions(MemorySessionStore())
    )
    app = CookieMiddleware(SessionMiddleware(Counter.as_asgi(), backend))
    first = await visit(app, None)
    assert first["body"] == b"1"
    cookie = cookie_from(first)
    assert cookie is not None and cookie[1].startswith(b"kanal_session=")
    second = await visit(app, cookie)
    assert second["body"] == b"2"
    # A forged or unknown cookie gives a fresh session, not an error; so does one with
    # bytes outside ASCII (the header is decoded as latin-1).
    for junk in (b"forged.123.abc", b"forged.123.\xe9", b"\xe9.123.abc"):
        assert (await visit(app, (b"cookie", b"kanal_session=" + junk)))["body"] == b"1"


def test_signed_cookie_rejects_tampering_and_expiry_and_accepts_fallback_keys() -> None:
    old = SignedCookieSessions("an-old-secret-of-enough-length", max_age=100)
    new = SignedCookieSessions(
        SECRET, fallback_keys=("an-old-secret-of-enough-length",), max_age=100
    )
    value = old.encode({"user": "7"}, now=1000)
    assert new.decode(value, now=1050) == {"user": "7"}
    assert new.decode(value, now=1101) is None  # older than max_age
    body, _, rest = value.partition(".")
    tampered = SignedCookieSessions(SECRET).encode({"user": "1"}, now=1000).partition(".")[0]
    assert tampered != body
    assert new.decode(f"{tampered}.{rest}", now=1050) is None  # someone else's payload
    assert SignedCookieSessions(SECRET).decode(value, now=1050) is None  # unknown key


async def test_signed_cookie_too_large_is_refused() -> None:
    backend = SignedCookieSessions(SECRET)
    session = await backend.load(None)
    session["blob"] = "x" * 5000
    with pytest.raises(SessionError, match="over the 4093"):
        await session.save()


class Remember(AsyncWebsocketConsumer):
    """Stores each frame in the session and saves it during the connection."""

    uses_channel_layer = False

    async def connect(self) -> None:
        self.scope["session"]["connected"] = True
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        session = self.scope["session"]
        session["last"] = text_data
        try:
            await session.save()
        except SessionError as exc:
            await self.send(text_data=f"error: {exc}")
        else:
            await self.send(text_data="saved")


async def test_websocket_session_cookie_on_accept_and_saved_during_the_connection() -> None:
    store = MemorySessionStore()
    backend = ServerSideSessions(store)
    app = SessionMiddleware(Remember.as_asgi(), backend)
    communicator = WebsocketCommunicator(app, "/ws/")
    connected, _ = await communicator.connect()
    assert connected
    set_cookie = dict(communicator.response_headers)[b"set-cookie"]
    key = set_cookie.split(b";")[0].split(b"=", 1)[1].decode()
    assert await store.load(key) == {"connected": True}
    await communicator.send_to(text_data="hello")
    assert await communicator.receive_from() == "saved"
    assert await store.load(key) == {"connected": True, "last": "hello"}
    await communicator.disconnect()


async def test_signed_cookie_session_cannot_be_saved_after_accept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = SessionMiddleware(Remember.as_asgi(), SignedCookieSessions(SECRET))
    communicator = WebsocketCommunicator(app, "/ws/")
    await communicator.connect()
    assert b"set-cookie" in dict(communicator.response_headers)
    await communicator.send_to(text_data="hello")
    reply = await communicator.receive_from()
    assert isinstance(reply, str) and "cannot save this session after" in reply
    with caplog.at_level(logging.WARNING, logger="kanal.middleware"):
        await communicator.disconnect()
    assert "the change is lost" in caplog.text


@pytest.mark.redis
async def test_redis_store_shares_sessions_between_processes(redis_server: RedisServer) -> None:
    writer = RedisSessionStore(redis_server.url, prefix="test-sessions:")
    reader = RedisSessionStore(redis_server.url, prefix="test-sessions:")
    try:
        app_a = SessionMiddleware(Remember.as_asgi(), ServerSideSessions(writer))
        communicator = WebsocketCommunicator(app_a, "/ws/")
        await communicator.connect()
        cookie = dict(communicator.response_headers)[b"set-cookie"].split(b";")[0]
        await communicator.send_to(text_data="from process A")
        assert await communicator.receive_from() == "saved"
        await communicator.disconnect()

        # "Process B" reads the same session through its own connection pool.
        app_b = SessionMiddleware(Counter.as_asgi(), ServerSideSessions(reader))
        response = await visit(app_b, (b"cookie", cookie))
        assert response["body"] == b"1"
        key = cookie.split(b"=", 1)[1].decode()
        assert await reader.load(key) == {"connected": True, "last": "from process A", "visits": 1}
        ttl = await reader.client.ttl("test-sessions:" + key)
        assert 0 < ttl <= 14 * 24 * 3600
        await reader.delete(key)
        assert await writer.load(key) is None
    finally:
        await writer.close()
        await reader.close()


@pytest.mark.redis
async def test_both_stores_refuse_what_json_cannot_hold(redis_server: RedisServer) -> None:
    for store in (MemorySessionStore(), RedisSessionStore(redis_server.url, prefix="refuse:")):
        try:
            with pytest.raises(SessionError, match="JSON-serialisable"):
                await store.save("key", {"when": object()}, 60)
            assert await store.load("key") is None
            await store.save("key", {"when": "now"}, 60)
            assert await store.load("key") == {"when": "now"}
        finally:
            await store.delete("key")
            await store.close()


class BrokenStore(MemorySessionStore):
    """A store whose backend is down for writes."""

    async def save(self, key: str, data: dict[str, Any], max_age: int) -> None:
        raise ConnectionError("store is down")


async def test_a_failing_store_gives_a_500_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    app = SessionMiddleware(Counter.as_asgi(), ServerSideSessions(BrokenStore()))
    with caplog.at_level(logging.ERROR, logger="kanal.consumers"):
        response = await visit(app, None)
    assert response["status"] == 500
    assert "saving a session to BrokenStore failed" in caplog.text
    assert b"set-cookie" not in dict(response["headers"])


def cookie_attributes(set_cookie: bytes) -> set[str]:
    """The attribute names of a ``Set-Cookie`` value, lower-cased (``{"secure", "path"...}``)."""
    return {part.split(b"=")[0].strip().decode().lower() for part in set_cookie.split(b";")[1:]}


@pytest.mark.parametrize("kind", ["signed", "memory"])
@pytest.mark.parametrize(
    ("scheme", "secure", "expected"),
    [
        ("http", None, False),  # plain HTTP (local development): no Secure by default
        ("https", None, True),  # over TLS: Secure without being asked
        ("http", True, True),  # configured explicitly: kept whatever the scheme
        ("https", False, False),
    ],
)
async def test_session_cookie_is_secure_over_tls_unless_configured(
    kind: str, scheme: str, secure: bool | None, expected: bool
) -> None:
    options: dict[str, Any] = {} if secure is None else {"secure": secure}
    backend: SessionBackend = (
        SignedCookieSessions(SECRET, **options)
        if kind == "signed"
        else ServerSideSessions(MemorySessionStore(), **options)
    )
    app = SessionMiddleware(Counter.as_asgi(), backend)
    response = await HttpCommunicator(app, "GET", "/", scope={"scheme": scheme}).get_response()
    set_cookie = dict(response["headers"])[b"set-cookie"]
    assert ("secure" in cookie_attributes(set_cookie)) is expected
    # The cookie that deletes the session (logout) carries the same attribute.
    session = await backend.load(None)
    session.over_tls = scheme == "https"
    session["x"] = 1
    del session["x"]
    await session.save()
    assert session.pending_cookie is not None
    assert b"Max-Age=0" in session.pending_cookie
    assert ("secure" in cookie_attributes(session.pending_cookie)) is expected


@pytest.mark.parametrize(("scheme", "expected"), [("ws", False), ("wss", True)])
async def test_websocket_session_cookie_is_secure_over_wss(scheme: str, expected: bool) -> None:
    app = SessionMiddleware(Remember.as_asgi(), ServerSideSessions(MemorySessionStore()))
    communicator = WebsocketCommunicator(app, "/ws/", scope={"scheme": scheme})
    connected, _ = await communicator.connect()
    assert connected
    set_cookie = dict(communicator.response_headers)[b"set-cookie"]
    assert ("secure" in cookie_attributes(set_cookie)) is expected
    await communicator.disconnect()
