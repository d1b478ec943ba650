"""Django's session engine behind kanal's session middleware: one session for views and sockets.

:class:`DjangoSessionStore` is a :class:`kanal.middleware.SessionStore` on ``SESSION_ENGINE``
(database, cache, cached_db, file); :class:`DjangoSessions` is kanal's server-side backend
with Django's cookie settings (``SESSION_COOKIE_NAME``, ``_AGE``, ``_DOMAIN``...). A session
a Django view wrote is the one ``scope["session"]`` holds, and back.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable
from typing import Any

from asgiref.sync import async_to_sync

from kanal.django._db import database_sync_to_async
from kanal.exceptions import ConfigError
from kanal.middleware import CookieMiddleware, ServerSideSessions, Session, SessionStore
from kanal.middleware import SessionMiddleware as BaseSessionMiddleware
from kanal.middleware._cookies import format_set_cookie
from kanal.typing import ASGIApp

__all__ = [
    "CookieMiddleware",
    "DjangoSession",
    "DjangoSessionStore",
    "DjangoSessions",
    "SessionMiddleware",
    "SessionMiddlewareStack",
]

logger = logging.getLogger("kanal.django")

# The engine keeps the data in the cookie itself: there is no key to store under.
_SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"


class DjangoSessionStore(SessionStore):
    """Session data in Django's ``SESSION_ENGINE`` (or ``engine``), by session key.

    The engine encodes the data (``SESSION_SERIALIZER``) and sets its expiry (a per-session
    ``set_expiry`` included), exactly as for a view; the ``max_age`` kanal passes is the
    same ``SESSION_COOKIE_AGE``. Every call runs through :func:`database_sync_to_async`.
    """

    def __init__(self, engine: str | None = None) -> None:
        from django.conf import settings

        name = engine or settings.SESSION_ENGINE
        if name == _SIGNED_COOKIES:
            raise ConfigError(
                "the signed_cookies session engine keeps the session in the cookie, which a "
                "WebSocket cannot change after its handshake; use the db, cache, cached_db or "
                "file engine with kanal.django's session middleware"
            )
        self.engine_name = name
        self.engine = importlib.import_module(name)

    def _load(self, key: str) -> dict[str, Any] | None:
        session = self.engine.SessionStore(key)
        data = session.load()
        # Every engine forgets the key (session_key None) when it is unknown or expired.
        return dict(data) if session.session_key is not None else None

    def _save(self, key: str, data: dict[str, Any]) -> None:
        from django.contrib.sessions.backends.base import UpdateError

        session = self.engine.SessionStore(key)
        session.clear()  # the data given replaces what is stored, without loading it first
        session.update(data)
        try:
            session.save()
        except UpdateError:
            # No such key stored yet (a new session, or one that expired meanwhile).
            session.save(must_create=True)

    def _delete(self, key: str) -> None:
        self.engine.SessionStore(key).delete(key)

    def new_key(self) -> str:
        """A new key in the engine's alphabet and length (32 of ``[a-z0-9]``)."""
        from django.contrib.sessions.backends.base import VALID_KEY_CHARS
        from django.utils.crypto import get_random_string

        key: str = get_random_string(32, VALID_KEY_CHARS)
        return key

    async def load(self, key: str) -> dict[str, Any] | None:
        """The data under ``key``, or ``None`` when the engine has none (or it expired)."""
        return await database_sync_to_async(self._load)(key)

    async def save(self, key: str, data: dict[str, Any], max_age: int) -> None:
        """Write ``data`` under ``key`` (the engine computes the expiry)."""
        await database_sync_to_async(self._save)(key, data)

    async def delete(self, key: str) -> None:
        """Delete ``key`` from the engine."""
        await database_sync_to_async(self._delete)(key)


class DjangoSession(Session):
    """``scope["session"]``: kanal's session, with the Django session API Channels code uses.

    ``await session.save()`` as in kanal, and ``session.save()`` from sync code (a thread,
    ``database_sync_to_async(scope["session"].save)()`` as Channels' docs write it) both save.
    ``session_key`` is the key, as on Django's sessions.
    """

    @property
    def session_key(self) -> str | None:
        """The key the cookie holds (``None`` until the session is first saved)."""
        return self.key

    def save(self, must_create: bool = False) -> Awaitable[None] | None:  # type: ignore[override]
        """Save now: a coroutine on the event loop, a blocking call in a thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            # A thread (asgiref's or kanal's pool): run the save on the loop it came from.
            async_to_sync(self._save_now)()
            return None
        return self._save_now()

    async def _save_now(self) -> None:
        if self.headers_sent and self._key_changed and self:
            # A login after the WebSocket handshake (Channels allows it): the new key cannot
            # reach the browser any more, so the login holds for this connection only.
            logger.warning(
                "the session got a new key after the handshake (a login in a consumer after "
                "accept()); the browser keeps its old cookie, so this login lasts only as "
                "long as this connection. Log in before accept(), or over HTTP, to keep it."
            )
            self.pending_cookie = await self.backend.save(self)
            self.modified = False
            self._key_changed = False
            return
        if self.headers_sent and self._key_changed:
            # A logout after the handshake: the old key's data is already gone (flush), so
            # the browser's cookie now names nothing, which is logged out.
            await self.backend.save(self)
            self.modified = False
            self._key_changed = False
            return
        await Session.save(self)


class DjangoSessions(ServerSideSessions):
    """kanal's server-side sessions on :class:`DjangoSessionStore`, cookie as Django sets it.

    Reads ``SESSION_COOKIE_NAME``, ``SESSION_COOKIE_AGE``, ``SESSION_COOKIE_PATH``,
    ``SESSION_COOKIE_DOMAIN``, ``SESSION_COOKIE_SECURE``, ``SESSION_COOKIE_HTTPONLY``,
    ``SESSION_COOKIE_SAMESITE`` and ``SESSION_EXPIRE_AT_BROWSER_CLOSE``.
    """

    store: DjangoSessionStore

    def __init__(self, store: DjangoSessionStore | None = None) -> None:
        from django.conf import settings

        samesite = settings.SESSION_COOKIE_SAMESITE
        super().__init__(
            store or DjangoSessionStore(),
            cookie_name=settings.SESSION_COOKIE_NAME,
            max_age=int(settings.SESSION_COOKIE_AGE),
            path=settings.SESSION_COOKIE_PATH,
            domain=settings.SESSION_COOKIE_DOMAIN,
            # Django's default (False) is kept: the cookie a view sets must be the same one.
            secure=bool(settings.SESSION_COOKIE_SECURE),
            httponly=bool(settings.SESSION_COOKIE_HTTPONLY),
            samesite=samesite.lower() if isinstance(samesite, str) else None,
        )
        self.expire_at_browser_close = bool(settings.SESSION_EXPIRE_AT_BROWSER_CLOSE)

    async def load(self, cookie: str | None) -> DjangoSession:
        """The session for a cookie's key (empty when the engine does not know it)."""
        data = await self.store.load(cookie) if cookie else None
        if data is None:
            return DjangoSession(self, None, {})
        return DjangoSession(self, cookie, data)

    async def save(self, session: Session) -> bytes:
        """Save through the engine; a new session gets a key of the engine's own form."""
        if session and session.key is None:
            session.key = self.store.new_key()
        return await super().save(session)

    def set_cookie(
        self, value: str, max_age: int | None = None, *, over_tls: bool = False
    ) -> bytes:
        """Django's cookie: without ``Max-Age`` under ``SESSION_EXPIRE_AT_BROWSER_CLOSE``."""
        if self.expire_at_browser_close and max_age is None:
            return format_set_cookie(self.cookie_name, value, **self.cookie_options)
        return super().set_cookie(value, max_age, over_tls=over_tls)


class SessionMiddleware(BaseSessionMiddleware):
    """Channels' ``SessionMiddleware(inner)``: ``scope["session"]`` from Django's engine.

    kanal's :class:`~kanal.middleware.SessionMiddleware` with :class:`DjangoSessions`: a
    changed session is saved when the response starts or the handshake is accepted, and at
    the end of a WebSocket if it changed after that.
    """

    def __init__(self, app: ASGIApp, backend: DjangoSessions | None = None) -> None:
        super().__init__(app, backend or DjangoSessions())


def SessionMiddlewareStack(app: ASGIApp) -> ASGIApp:
    """Cookies and Django sessions around ``app``, as Channels' ``SessionMiddlewareStack``."""
    return CookieMiddleware(SessionMiddleware(app))
