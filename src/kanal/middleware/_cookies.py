"""Cookies: parse the ``Cookie`` header into ``scope["cookies"]``; format ``Set-Cookie``."""

from __future__ import annotations

from http.cookies import Morsel
from typing import Literal

from kanal.typing import ASGIApp, Receive, Scope, Send, header_value

__all__ = ["CookieMiddleware", "format_set_cookie", "over_tls", "parse_cookies"]


def parse_cookies(header: str) -> dict[str, str]:
    """``"a=1; b=2"`` -> ``{"a": "1", "b": "2"}``, the way browsers send them.

    Not ``http.cookies.SimpleCookie``: it drops every cookie after one it cannot parse,
    and one odd cookie set by another app on the domain would log everyone out.
    """
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        if not sep:
            name, value = "", name  # a nameless cookie, as browsers allow
        name, value = name.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name or value:
            cookies.setdefault(name, value)  # the first is the most specific path
    return cookies


def over_tls(scope: Scope) -> bool:
    """True when the connection came over TLS, so a cookie set on it can be ``Secure``.

    The scheme is the one the server reports: ``https``/``wss`` for its own TLS, or what a
    trusted proxy said in ``X-Forwarded-Proto`` when the server takes proxy headers.
    """
    return scope.get("scheme") in ("https", "wss")


def format_set_cookie(
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    path: str = "/",
    domain: str | None = None,
    secure: bool = False,
    httponly: bool = True,
    samesite: Literal["lax", "strict", "none"] | None = "lax",
) -> bytes:
    """The value of a ``Set-Cookie`` header (``max_age=0`` deletes the cookie)."""
    morsel: Morsel[str] = Morsel()
    morsel.set(name, value, value)
    morsel["path"] = path
    if max_age is not None:
        morsel["max-age"] = str(max_age)
    if domain:
        morsel["domain"] = domain
    if secure:
        morsel["secure"] = True
    if httponly:
        morsel["httponly"] = True
    if samesite:
        morsel["samesite"] = samesite.capitalize()
    return morsel.OutputString().encode("latin-1")


class CookieMiddleware:
    """Puts the request's cookies in ``scope["cookies"]`` (a ``dict[str, str]``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Parse the cookies, then call the application."""
        if scope["type"] in ("http", "websocket") and "cookies" not in scope:
            raw = header_value(scope, b"cookie")
            scope = dict(scope, cookies=parse_cookies(raw.decode("latin-1")) if raw else {})
        await self.app(scope, receive, send)
