"""Authentication: ``scope["user"]`` from a pluggable loader (session or bearer token)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs

from kanal.exceptions import ConfigError
from kanal.middleware._sessions import Session
from kanal.typing import ASGIApp, Receive, Scope, Send, header_value

__all__ = [
    "SESSION_USER_KEY",
    "AnonymousUser",
    "AuthMiddleware",
    "BearerTokenUserLoader",
    "SessionUserLoader",
    "UserLoader",
    "login",
    "logout",
]

logger = logging.getLogger("kanal.middleware")

#: The session key holding the logged-in user's id.
SESSION_USER_KEY = "_auth_user_id"


class AnonymousUser:
    """``scope["user"]`` when nobody is logged in."""

    id = None
    is_authenticated = False
    is_anonymous = True

    def __repr__(self) -> str:
        return "AnonymousUser()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnonymousUser)

    def __hash__(self) -> int:
        return hash(AnonymousUser)


class UserLoader(Protocol):
    """Finds the user of a connection from its scope, or returns ``None``."""

    async def __call__(self, scope: Scope) -> Any:
        """The user, or ``None`` for nobody."""


class SessionUserLoader:
    """The user whose id :func:`login` stored in the session.

    ``load_user(user_id)`` is your lookup (a database query); ``None`` means the user is
    gone, and the connection is anonymous.
    """

    def __init__(self, load_user: Callable[[str], Awaitable[Any]]) -> None:
        self.load_user = load_user

    async def __call__(self, scope: Scope) -> Any:
        """Look up the session's user id."""
        session = scope.get("session")
        if session is None:
            raise ConfigError(
                "SessionUserLoader needs scope['session']; put SessionMiddleware outside "
                "AuthMiddleware"
            )
        user_id = session.get(SESSION_USER_KEY)
        if user_id is None:
            return None
        return await self.load_user(str(user_id))


class BearerTokenUserLoader:
    """The user of an ``Authorization: Bearer <token>`` header.

    ``verify(token)`` returns the user or ``None``. Browsers cannot set headers on a
    WebSocket; set ``query_param`` (e.g. ``"access_token"``) to also read the token from
    the query string there, knowing that URLs end up in logs.
    """

    def __init__(
        self, verify: Callable[[str], Awaitable[Any]], *, query_param: str | None = None
    ) -> None:
        self.verify = verify
        self.query_param = query_param

    def token(self, scope: Scope) -> str | None:
        """The token of a scope, if it carries one."""
        header = header_value(scope, b"authorization")
        if header is not None:
            scheme, _, token = header.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        if self.query_param and scope.get("type") == "websocket":
            query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
            values = query.get(self.query_param)
            if values:
                return values[0]
        return None

    async def __call__(self, scope: Scope) -> Any:
        """Verify the token, if any."""
        token = self.token(scope)
        if token is None:
            return None
        return await self.verify(token)


class AuthMiddleware:
    """Sets ``scope["user"]``: the first user a loader finds, else :class:`AnonymousUser`.

    ::

        AuthMiddleware(app, [SessionUserLoader(get_user), BearerTokenUserLoader(check_token)])

    A loader that raises is logged and counts as "no user": a broken user store makes
    people anonymous, it does not take the site down.
    """

    def __init__(self, app: ASGIApp, loaders: UserLoader | Sequence[UserLoader]) -> None:
        self.app = app
        self.loaders: list[UserLoader] = (
            list(loaders) if isinstance(loaders, Sequence) else [loaders]
        )
        if not self.loaders:
            raise ConfigError("AuthMiddleware needs at least one user loader")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Find the user, then call the application."""
        if scope["type"] in ("http", "websocket"):
            scope = dict(scope, user=await self.find_user(scope))
        await self.app(scope, receive, send)

    async def find_user(self, scope: Scope) -> Any:
        """The first user any loader returns, else an :class:`AnonymousUser`."""
        for loader in self.loaders:
            try:
                user = await loader(scope)
            except ConfigError:
                raise
            except Exception:
                logger.exception(
                    "user loader %r failed; treating the connection as anonymous", loader
                )
                continue
            if user is not None:
                return user
        return AnonymousUser()


def _session_of(scope: Scope) -> Session:
    session = scope.get("session")
    if not isinstance(session, Session):
        raise ConfigError("login() and logout() need SessionMiddleware around the application")
    return session


async def login(scope: Scope, user: Any, *, user_id: Any = None) -> None:
    """Log ``user`` in: store its id (``user.id`` by default) in a session with a new key.

    Do it before the response starts (HTTP) or before ``accept()`` (WebSocket) with signed
    cookies; server-side sessions save it whenever ``session.save()`` is called.
    """
    session = _session_of(scope)
    ident = user_id if user_id is not None else getattr(user, "id", None)
    if ident is None:
        raise ValueError(f"login() needs user_id=... for a user without an id: {user!r}")
    await session.cycle_key()
    session[SESSION_USER_KEY] = str(ident)
    scope["user"] = user


async def logout(scope: Scope) -> None:
    """Forget the session (data and key) and make the connection anonymous."""
    await _session_of(scope).flush()
    scope["user"] = AnonymousUser()
