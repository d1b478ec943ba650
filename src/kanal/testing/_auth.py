"""Helpers to log a user in for tests, without going through a login page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kanal.middleware import SESSION_USER_KEY, SessionBackend

__all__ = ["bearer_headers", "login_headers"]


async def login_headers(
    backend: SessionBackend,
    user: Any = None,
    *,
    user_id: Any = None,
    data: Mapping[str, Any] | None = None,
) -> list[tuple[bytes, bytes]]:
    """A ``Cookie`` header for a new session in which ``user`` is logged in.

    Pass it to a communicator (``headers=await login_headers(sessions, alice)``) or a real
    client. The session is saved through ``backend``, so a server-side store holds it.
    """
    ident = user_id if user_id is not None else getattr(user, "id", None)
    if ident is None:
        raise ValueError("login_headers() needs a user with an id, or user_id=...")
    session = await backend.load(None)
    session[SESSION_USER_KEY] = str(ident)
    for key, value in (data or {}).items():
        session[key] = value
    set_cookie = await backend.save(session)
    return [(b"cookie", set_cookie.split(b";", 1)[0])]


def bearer_headers(token: str) -> list[tuple[bytes, bytes]]:
    """An ``Authorization: Bearer <token>`` header."""
    return [(b"authorization", f"Bearer {token}".encode("latin-1"))]
