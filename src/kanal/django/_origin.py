"""WebSocket origin checks on Django's ``ALLOWED_HOSTS`` (Channels' validators)."""

from __future__ import annotations

from collections.abc import Iterable

from kanal.middleware import AllowedOriginsMiddleware
from kanal.typing import ASGIApp

__all__ = ["AllowedHostsOriginValidator", "OriginValidator", "origins_for_hosts"]

# What Django's runserver accepts when DEBUG is on and ALLOWED_HOSTS is empty.
_DEBUG_HOSTS = ["localhost", "127.0.0.1", "[::1]"]


def origins_for_hosts(hosts: Iterable[str]) -> list[str]:
    """kanal origin patterns for Django host patterns: any scheme and port, as Channels checks.

    ``"example.com"`` -> ``http(s)://example.com:*``; ``".example.com"`` -> the domain and
    every subdomain; ``"*"`` -> anything; an entry with a scheme (``"https://a.com:8443"``)
    is kept as it is.
    """
    patterns: list[str] = []
    for host in hosts:
        host = host.strip().lower()
        if host == "*":
            patterns.append("*")
        elif "://" in host:
            patterns.append(host)
        elif host:
            for scheme in ("http", "https"):
                if host.startswith("."):
                    patterns.append(f"{scheme}://*{host}:*")
                    patterns.append(f"{scheme}://{host[1:]}:*")
                else:
                    patterns.append(f"{scheme}://{host}:*")
    return patterns


class OriginValidator(AllowedOriginsMiddleware):
    """Channels' ``OriginValidator(app, allowed_origins)``: hosts as Django writes them.

    A handshake without ``Origin`` (not a browser) passes only when ``"*"`` is allowed, as in
    Channels; others are refused with HTTP 403.
    """

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str]) -> None:
        allowed = list(allowed_origins)
        super().__init__(app, origins_for_hosts(allowed), allow_missing="*" in allowed)


class AllowedHostsOriginValidator(OriginValidator):
    """Channels' ``AllowedHostsOriginValidator(app)``: origins must be in ``ALLOWED_HOSTS``.

    With ``DEBUG`` and an empty ``ALLOWED_HOSTS``, localhost, 127.0.0.1 and [::1], as Django's
    own host check allows.
    """

    def __init__(self, app: ASGIApp) -> None:
        from django.conf import settings

        hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not hosts:
            hosts = list(_DEBUG_HOSTS)
        super().__init__(app, hosts)
