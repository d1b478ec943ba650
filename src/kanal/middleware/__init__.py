"""Pure-ASGI middleware: cookies, sessions, authentication, and a WebSocket origin check.

A typical stack, outermost first::

    application = AllowedOriginsMiddleware(
        SessionMiddleware(
            AuthMiddleware(router, SessionUserLoader(get_user)),
            ServerSideSessions(RedisSessionStore("redis://localhost:6379/0")),
        ),
        allowed_origins=["https://*.example.com"],
    )
"""

from kanal.exceptions import SessionError
from kanal.middleware._auth import (
    SESSION_USER_KEY,
    AnonymousUser,
    AuthMiddleware,
    BearerTokenUserLoader,
    SessionUserLoader,
    UserLoader,
    login,
    logout,
)
from kanal.middleware._cookies import CookieMiddleware, format_set_cookie, parse_cookies
from kanal.middleware._origin import AllowedOriginsMiddleware, origin_allowed
from kanal.middleware._sessions import (
    ServerSideSessions,
    Session,
    SessionBackend,
    SessionMiddleware,
    SignedCookieSessions,
)
from kanal.middleware._stores import MemorySessionStore, RedisSessionStore, SessionStore

__all__ = [
    "SESSION_USER_KEY",
    "AllowedOriginsMiddleware",
    "AnonymousUser",
    "AuthMiddleware",
    "BearerTokenUserLoader",
    "CookieMiddleware",
    "MemorySessionStore",
    "RedisSessionStore",
    "ServerSideSessions",
    "Session",
    "SessionBackend",
    "SessionError",
    "SessionMiddleware",
    "SessionStore",
    "SessionUserLoader",
    "SignedCookieSessions",
    "UserLoader",
    "format_set_cookie",
    "login",
    "logout",
    "origin_allowed",
    "parse_cookies",
]
