"""Sessions: signed-cookie or server-side (pluggable store), for HTTP and WebSocket."""

from __future__ import annotations

import abc
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Iterator, MutableMapping
from typing import Any, Literal

from kanal.exceptions import ConfigError, SessionError
from kanal.middleware._cookies import format_set_cookie, over_tls, parse_cookies
from kanal.middleware._stores import SessionStore
from kanal.typing import ASGIApp, Message, Receive, Scope, Send, header_value

__all__ = [
    "ServerSideSessions",
    "Session",
    "SessionBackend",
    "SessionMiddleware",
    "SignedCookieSessions",
]

logger = logging.getLogger("kanal.middleware")

# Two weeks, Django's SESSION_COOKIE_AGE: long enough that people stay logged in between
# visits, short enough that a stolen cookie does not work forever.
DEFAULT_MAX_AGE = 14 * 24 * 3600
# Browsers drop cookies over 4096 bytes (name, value and attributes); refuse to send one.
MAX_COOKIE_SIZE = 4093


class Session(MutableMapping[str, Any]):
    """The session of one connection: a dict of JSON values, saved when changed.

    Over HTTP a changed session is saved when the response starts. Over WebSocket it is
    saved when the handshake is accepted; after that, call ``await session.save()``
    yourself (server-side sessions only: a cookie can no longer be set then). A session
    still unsaved when the connection ends is saved then, if the backend can.
    """

    def __init__(self, backend: SessionBackend, key: str | None, data: dict[str, Any]) -> None:
        self.backend = backend
        self.key = key
        self._data = data
        self.modified = False
        #: True once response headers went out: a cookie can no longer be set.
        self.headers_sent = False
        #: The cookie to send with the response headers, set by :meth:`save`.
        self.pending_cookie: bytes | None = None
        #: True when the connection came over TLS (set by :class:`SessionMiddleware`): a
        #: backend whose ``secure`` is not configured then marks its cookie ``Secure``.
        self.over_tls = False
        self._key_changed = False

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._data[name] = value
        self.modified = True

    def __delitem__(self, name: str) -> None:
        del self._data[name]
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<Session {self.key!r} {self._data!r}>"

    def to_dict(self) -> dict[str, Any]:
        """A copy of the data."""
        return dict(self._data)

    async def cycle_key(self) -> None:
        """Give the session a new key, keeping its data (do it at login, against fixation)."""
        await self.backend.forget(self)
        self.key = None
        self._key_changed = True
        self.modified = True

    async def flush(self) -> None:
        """Delete the data and the key (logout)."""
        self._data.clear()
        await self.cycle_key()

    async def save(self) -> None:
        """Persist the session now; raises :class:`SessionError` if that needs a cookie too late."""
        if self.headers_sent and (self.backend.needs_cookie_on_save or self._key_changed):
            raise SessionError(
                f"{type(self.backend).__name__} cannot save this session after the response "
                "headers (or the WebSocket handshake) went out: the browser needs a new cookie. "
                "Use ServerSideSessions, or change the session before accept()."
            )
        self.pending_cookie = await self.backend.save(self)
        self.modified = False
        self._key_changed = False


class SessionBackend(abc.ABC):
    """Turns a cookie value into session data and back.

    The keywords are the cookie's attributes. ``secure=None`` (the default) sends the
    cookie with ``Secure`` when the request came over TLS (scheme ``https``/``wss``, or a
    trusted proxy's ``X-Forwarded-Proto``) and without it over plain HTTP, so that a site
    behind TLS never leaks its session cookie to a plain-HTTP request while local
    development over ``http://`` still works; ``True`` or ``False`` fixes it either way.
    """

    #: True if every save changes the cookie (signed cookies), False if the cookie is a key.
    needs_cookie_on_save: bool = False

    def __init__(
        self,
        *,
        cookie_name: str = "kanal_session",
        max_age: int = DEFAULT_MAX_AGE,
        path: str = "/",
        domain: str | None = None,
        secure: bool | None = None,
        httponly: bool = True,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
    ) -> None:
        if not (isinstance(max_age, int) and max_age > 0):
            raise ConfigError(
                f"session max_age must be a positive number of seconds, not {max_age!r}"
            )
        self.cookie_name = cookie_name
        self.max_age = max_age
        self.cookie_options: dict[str, Any] = {
            "path": path,
            "domain": domain,
            "secure": secure,
            "httponly": httponly,
            "samesite": samesite,
        }

    @abc.abstractmethod
    async def load(self, cookie: str | None) -> Session:
        """The session for a cookie value (a new, empty one if it is missing or invalid)."""

    @abc.abstractmethod
    async def save(self, session: Session) -> bytes:
        """Persist ``session``; return the ``Set-Cookie`` header value to send."""

    async def forget(self, session: Session) -> None:
        """Drop the stored data of ``session``'s current key (nothing for cookies)."""
        return None

    def set_cookie(
        self, value: str, max_age: int | None = None, *, over_tls: bool = False
    ) -> bytes:
        """A ``Set-Cookie`` value for this backend's cookie.

        ``over_tls`` says whether the connection came over TLS; it decides ``Secure`` when
        the backend's ``secure`` option is ``None``.
        """
        options = self.cookie_options
        if options["secure"] is None:
            options = dict(options, secure=over_tls)
        return format_set_cookie(
            self.cookie_name,
            value,
            max_age=self.max_age if max_age is None else max_age,
            **options,
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SignedCookieSessions(SessionBackend):
    """The whole session in the cookie, signed with HMAC-SHA256 (readable, not forgeable).

    No storage needed; the data is visible to the user (do not put secrets in it) and must
    fit in a cookie. ``secret_key`` signs; older keys in ``fallback_keys`` still verify, so
    keys can be rotated without logging everyone out.
    """

    needs_cookie_on_save = True

    def __init__(
        self,
        secret_key: str | bytes,
        *,
        fallback_keys: tuple[str | bytes, ...] = (),
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not secret_key or len(secret_key) < 16:
            raise ConfigError("SignedCookieSessions needs a secret_key of at least 16 characters")
        self._keys = [k.encode() if isinstance(k, str) else k for k in (secret_key, *fallback_keys)]

    def _sign(self, payload: str, key: bytes) -> str:
        return _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())

    def encode(self, data: dict[str, Any], now: float | None = None) -> str:
        """``payload.timestamp.signature`` for ``data``."""
        payload = (
            f"{_b64(json.dumps(data, separators=(',', ':')).encode())}.{int(now or time.time())}"
        )
        return f"{payload}.{self._sign(payload, self._keys[0])}"

    def decode(self, cookie: str, now: float | None = None) -> dict[str, Any] | None:
        """The data of a cookie if its signature is valid and it is younger than ``max_age``."""
        if not cookie.isascii():
            # Ours are ASCII; anything else is junk (or another app's cookie), and
            # hmac.compare_digest would raise TypeError on it instead of saying "invalid".
            return None
        payload, _, signature = cookie.rpartition(".")
        if not payload or not any(
            hmac.compare_digest(signature, self._sign(payload, key)) for key in self._keys
        ):
            return None
        body, _, stamp = payload.rpartition(".")
        try:
            if int(stamp) + self.max_age < (now or time.time()):
                return None
            data = json.loads(_unb64(body))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    async def load(self, cookie: str | None) -> Session:
        """Verify the cookie; a bad or expired one gives an empty session."""
        data = self.decode(cookie) if cookie else None
        return Session(self, None, data or {})

    async def save(self, session: Session) -> bytes:
        """Sign the data into a new cookie (an empty session deletes the cookie)."""
        if not session:
            return self.set_cookie("", max_age=0, over_tls=session.over_tls)
        try:
            header = self.set_cookie(self.encode(session.to_dict()), over_tls=session.over_tls)
        except TypeError as exc:
            raise SessionError(f"session data must be JSON-serialisable: {exc}") from None
        if len(header) > MAX_COOKIE_SIZE:
            raise SessionError(
                f"the signed session cookie would be {len(header)} bytes, over the "
                f"{MAX_COOKIE_SIZE} browsers keep; store less, or use ServerSideSessions"
            )
        return header


class ServerSideSessions(SessionBackend):
    """The session data in a :class:`SessionStore`; the cookie holds only a random key.

    Saving needs no new cookie, so a session changed during a WebSocket can be saved.
    """

    def __init__(self, store: SessionStore, **options: Any) -> None:
        super().__init__(**options)
        self.store = store

    async def load(self, cookie: str | None) -> Session:
        """Look the key up; an unknown key gives a new, empty session."""
        try:
            data = await self.store.load(cookie) if cookie else None
        except SessionError:
            raise
        except Exception as exc:
            raise SessionError(
                f"loading a session from {type(self.store).__name__} failed: {exc!r}"
            ) from exc
        if data is None:
            return Session(self, None, {})
        return Session(self, cookie, data)

    async def save(self, session: Session) -> bytes:
        """Write the data (a new key for a new session); return the cookie."""
        if not session:
            if session.key is not None:
                await self.store.delete(session.key)
            return self.set_cookie("", max_age=0, over_tls=session.over_tls)
        if session.key is None:
            session.key = secrets.token_urlsafe(32)
        try:
            await self.store.save(session.key, session.to_dict(), self.max_age)
        except SessionError:
            raise
        except Exception as exc:
            raise SessionError(
                f"saving a session to {type(self.store).__name__} failed: {exc!r}"
            ) from exc
        return self.set_cookie(session.key, over_tls=session.over_tls)

    async def forget(self, session: Session) -> None:
        """Delete the stored data of the current key."""
        if session.key is not None:
            await self.store.delete(session.key)


class SessionMiddleware:
    """Loads ``scope["session"]`` from the cookie and saves it when it changed.

    ::

        store = RedisSessionStore("redis://localhost:6379/0")
        app = SessionMiddleware(AuthMiddleware(router, ...), ServerSideSessions(store))
    """

    def __init__(self, app: ASGIApp, backend: SessionBackend) -> None:
        if not isinstance(backend, SessionBackend):
            raise ConfigError(f"SessionMiddleware needs a SessionBackend, not {backend!r}")
        self.app = app
        self.backend = backend

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Attach the session, run the application, save the session if it changed."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        cookies = scope.get("cookies")
        if cookies is None:
            raw = header_value(scope, b"cookie")
            cookies = parse_cookies(raw.decode("latin-1")) if raw else {}
        session = await self.backend.load(cookies.get(self.backend.cookie_name))
        session.over_tls = over_tls(scope)
        scope = dict(scope, cookies=cookies, session=session)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                if session.modified:
                    # Cleared first: if the store fails, the error response that follows
                    # must not try (and fail) to save again.
                    session.modified = False
                    try:
                        await session.save()
                    except BaseException:
                        session.headers_sent = True
                        raise
                if session.pending_cookie is not None:
                    headers = list(message.get("headers", []))
                    headers.append((b"set-cookie", session.pending_cookie))
                    message = dict(message, headers=headers)
                    session.pending_cookie = None
                session.headers_sent = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_cookie)
        finally:
            if session.modified and session.headers_sent and self.backend.needs_cookie_on_save:
                logger.warning(
                    "the session changed after the headers went out and %s cannot save it "
                    "without a new cookie; the change is lost",
                    type(self.backend).__name__,
                )
            elif session.modified and session.headers_sent:
                # Changed after the headers, never saved: keep the change (server-side only).
                try:
                    await session.save()
                except Exception as exc:
                    logger.error("saving the session at the end of the connection failed: %r", exc)
