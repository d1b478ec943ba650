"""``scope["user"]`` from Django's auth backends, and login/logout that save the session.

:class:`DjangoUserLoader` is a :class:`kanal.middleware.UserLoader`: the user whose id a
Django login stored in the session, checked as ``django.contrib.auth.get_user`` checks it
(a listed backend, a session hash that still matches the password).
"""

from __future__ import annotations

from typing import Any

from kanal.django._db import database_sync_to_async
from kanal.django._sessions import CookieMiddleware, SessionMiddleware
from kanal.exceptions import ConfigError
from kanal.middleware import AnonymousUser as KanalAnonymousUser
from kanal.middleware import AuthMiddleware as BaseAuthMiddleware
from kanal.middleware import Session
from kanal.typing import ASGIApp, Scope

__all__ = [
    "AuthMiddleware",
    "AuthMiddlewareStack",
    "DjangoUserLoader",
    "get_user",
    "login",
    "logout",
]

# What the session says about its user, read in the loop; the lookup runs in a thread.
_Verdict = tuple[Any, str | None]  # (user or None, "flush" | "rehash" | None)


def _anonymous() -> Any:
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()


def _user_of(data: dict[str, Any]) -> _Verdict:
    """The user ``data`` (a session's contents) names, as Django's ``get_user`` finds it."""
    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
        load_backend,
    )
    from django.utils.crypto import constant_time_compare

    try:
        user_id = get_user_model()._meta.pk.to_python(data[SESSION_KEY])
        backend_path = data[BACKEND_SESSION_KEY]
    except KeyError:
        return None, None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None, None
    user = load_backend(backend_path).get_user(user_id)
    if user is None or not hasattr(user, "get_session_auth_hash"):
        return user, None
    stored = data.get(HASH_SESSION_KEY)
    if stored and constant_time_compare(stored, user.get_session_auth_hash()):
        return user, None
    fallbacks = getattr(user, "get_session_auth_fallback_hash", lambda: ())()
    if stored and any(constant_time_compare(stored, old) for old in fallbacks):
        return user, "rehash"  # signed with a SECRET_KEY_FALLBACKS key: still valid
    return None, "flush"  # the password changed since: this session is over


def _session_of(scope: Scope) -> Session:
    session = scope.get("session")
    if not isinstance(session, Session):
        raise ConfigError(
            "Django login needs scope['session']: wrap the application in "
            "kanal.django.AuthMiddlewareStack (or SessionMiddleware)"
        )
    return session


async def get_user(scope: Scope) -> Any:
    """The user of ``scope``'s session, or Django's ``AnonymousUser`` (Channels' ``get_user``).

    A session whose password hash no longer matches is flushed, as Django does.
    """
    session = _session_of(scope)
    user, action = await database_sync_to_async(_user_of)(session.to_dict())
    if action == "flush":
        await session.flush()
    elif action == "rehash":
        from django.contrib.auth import HASH_SESSION_KEY

        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    return user if user is not None else _anonymous()


class DjangoUserLoader:
    """The user loader of :class:`AuthMiddleware`: Django's user of the session."""

    async def __call__(self, scope: Scope) -> Any:
        """The logged-in user, or Django's ``AnonymousUser``."""
        return await get_user(scope)


class AuthMiddleware(BaseAuthMiddleware):
    """Channels' ``AuthMiddleware(inner)``: kanal's, with :class:`DjangoUserLoader`.

    ``scope["user"]`` is the user a Django view would see, else Django's ``AnonymousUser``.
    Needs ``scope["session"]``: use :func:`AuthMiddlewareStack`.
    """

    def __init__(self, app: ASGIApp, loaders: Any = None) -> None:
        super().__init__(app, loaders if loaders is not None else DjangoUserLoader())

    async def find_user(self, scope: Scope) -> Any:
        """The loaders' user; Django's ``AnonymousUser`` rather than kanal's for nobody."""
        user = await super().find_user(scope)
        return _anonymous() if isinstance(user, KanalAnonymousUser) else user


def AuthMiddlewareStack(app: ASGIApp) -> ASGIApp:
    """Cookies, Django sessions and Django users around ``app`` (Channels' stack)."""
    return CookieMiddleware(SessionMiddleware(AuthMiddleware(app)))


def _backend_of(user: Any, backend: str | None) -> str:
    if backend is not None:
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a dotted import path string, not {backend!r}")
        return backend
    found = getattr(user, "backend", None)
    if isinstance(found, str):
        return found
    from django.conf import settings

    backends = list(settings.AUTHENTICATION_BACKENDS)
    if len(backends) != 1:
        raise ValueError(
            "several authentication backends are configured: pass backend=... to login(), "
            "or set user.backend (authenticate() does)"
        )
    path: str = backends[0]
    return path


async def login(scope: Scope, user: Any = None, backend: str | None = None) -> None:
    """Log ``user`` in (``scope["user"]`` if not given) and save the session, as Django's login.

    Another user's session is emptied first; the key changes, against session fixation.
    Before ``accept()`` (or an HTTP response) the browser gets the new cookie; after the
    handshake it cannot, so the login holds for this connection only (logged as a warning).
    """
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.signals import user_logged_in
    from django.utils.crypto import constant_time_compare

    session = _session_of(scope)
    if user is None:
        user = scope.get("user")
    if user is None:
        raise ValueError("login() needs a user, as an argument or in scope['user']")
    auth_hash = user.get_session_auth_hash() if hasattr(user, "get_session_auth_hash") else ""
    user_key = user._meta.pk.value_to_string(user)
    if SESSION_KEY in session:
        if session[SESSION_KEY] != user_key or (
            auth_hash and not constant_time_compare(session.get(HASH_SESSION_KEY, ""), auth_hash)
        ):
            await session.flush()  # someone else's session: start an empty one
        else:
            await session.cycle_key()
    else:
        await session.cycle_key()
    session[SESSION_KEY] = user_key
    session[BACKEND_SESSION_KEY] = _backend_of(user, backend)
    session[HASH_SESSION_KEY] = auth_hash
    scope["user"] = user
    await database_sync_to_async(user_logged_in.send)(
        sender=user.__class__, request=None, user=user
    )
    await session.save()


async def logout(scope: Scope) -> None:
    """Log out: ``user_logged_out``, the session deleted and saved, ``scope["user"]`` anonymous."""
    from django.contrib.auth.signals import user_logged_out

    session = _session_of(scope)
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        await database_sync_to_async(user_logged_out.send)(
            sender=user.__class__, request=None, user=user
        )
    await session.flush()
    await session.save()
    scope["user"] = _anonymous()
