"""The project's ASGI application, as ``runserver`` and ``runworker`` find it."""

from __future__ import annotations

import importlib

from kanal.typing import ASGIApp

__all__ = ["get_default_application"]


def get_default_application() -> ASGIApp:
    """``settings.ASGI_APPLICATION`` (``"mysite.asgi.application"``), imported.

    Without that setting, Django's own ASGI handler (HTTP only), so that a project that has
    no WebSockets yet can use kanal's ``runserver`` from day one.
    """
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    dotted = getattr(settings, "ASGI_APPLICATION", None)
    if not dotted:
        from django.core.asgi import get_asgi_application

        handler: ASGIApp = get_asgi_application()
        return handler
    path, _, name = str(dotted).rpartition(".")
    if not path:
        raise ImproperlyConfigured(
            f"ASGI_APPLICATION must be a dotted path like 'mysite.asgi.application', not {dotted!r}"
        )
    try:
        module = importlib.import_module(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"cannot import the ASGI_APPLICATION module {path!r}: {exc}"
        ) from exc
    try:
        application: ASGIApp = getattr(module, name)
    except AttributeError:
        raise ImproperlyConfigured(
            f"the ASGI_APPLICATION module {path!r} has no {name!r}"
        ) from None
    return application
