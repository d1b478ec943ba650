"""An origin check for WebSockets, against cross-site WebSocket hijacking."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from kanal.exceptions import ConfigError
from kanal.typing import ASGIApp, Receive, Scope, Send, header_value

__all__ = ["AllowedOriginsMiddleware", "origin_allowed"]

logger = logging.getLogger("kanal.middleware")

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _split(origin: str) -> tuple[str, str, str] | None:
    """``"https://a.example.com:8443"`` -> ``("https", "a.example.com", "8443")``."""
    try:
        parts = urlsplit(origin)
        host = parts.hostname or ""
        raw_port = parts.netloc.rpartition(":")[2] if ":" in parts.netloc.rsplit("]", 1)[-1] else ""
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    if raw_port == "*":
        return parts.scheme.lower(), host.lower(), "*"
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        port = _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    return parts.scheme.lower(), host.lower(), str(port)


def origin_allowed(origin: str, allowed: Iterable[str]) -> bool:
    """True if ``origin`` matches one of ``allowed``.

    Patterns: ``"*"`` (anything), ``"https://example.com"`` (exact, default port implied),
    ``"https://*.example.com"`` (any subdomain, not the bare domain),
    ``"http://localhost:*"`` (any port).
    """
    found = _split(origin)
    if found is None:
        return False
    scheme, host, port = found
    for pattern in allowed:
        if pattern == "*":
            return True
        expected = _split(pattern.replace("://*.", "://wildcard."))
        if expected is None:
            continue
        p_scheme, p_host, p_port = expected
        if p_host.startswith("wildcard."):
            suffix = p_host[len("wildcard") :]
            host_ok = host.endswith(suffix) and len(host) > len(suffix)
        else:
            host_ok = fnmatch.fnmatchcase(host, p_host) if "*" in p_host else host == p_host
        if scheme == p_scheme and host_ok and p_port in ("*", port):
            return True
    return False


class AllowedOriginsMiddleware:
    """Refuses WebSocket handshakes whose ``Origin`` is not allowed (HTTP 403).

    Browsers send ``Origin`` with every WebSocket handshake and let any page open a
    WebSocket to any site, cookies included: without this check, a page elsewhere can act
    as your logged-in user. Clients that are not browsers send no ``Origin``; they are let
    through only with ``allow_missing=True``. HTTP scopes pass unchanged.
    """

    def __init__(
        self, app: ASGIApp, allowed_origins: Iterable[str], *, allow_missing: bool = False
    ) -> None:
        self.app = app
        self.allowed_origins = list(allowed_origins)
        if isinstance(allowed_origins, str):
            raise ConfigError("allowed_origins must be a list of origins, not one string")
        for pattern in self.allowed_origins:
            if pattern != "*" and _split(pattern.replace("://*.", "://wildcard.")) is None:
                raise ConfigError(
                    f"allowed origin {pattern!r} is not like 'https://example.com', "
                    "'https://*.example.com', 'http://localhost:*' or '*'"
                )
        self.allow_missing = allow_missing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the origin of a WebSocket, then call the application or refuse."""
        if scope["type"] == "websocket":
            raw = header_value(scope, b"origin")
            origin = raw.decode("latin-1") if raw is not None else None
            if origin is None:
                allowed = self.allow_missing
            else:
                allowed = origin_allowed(origin, self.allowed_origins)
            if not allowed:
                logger.warning(
                    "WebSocket handshake to %r refused: origin %r is not in %r",
                    scope.get("path"),
                    origin,
                    self.allowed_origins,
                )
                message = await receive()
                if message.get("type") == "websocket.connect":
                    await send({"type": "websocket.close", "code": 1008})
                return
        await self.app(scope, receive, send)
