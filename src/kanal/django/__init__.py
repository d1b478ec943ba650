"""kanal for Django projects: add ``"kanal.django"`` to ``INSTALLED_APPS`` (above staticfiles).

It gives ``manage.py runserver`` (HTTP and WebSocket, on kanal's server) and
``manage.py runworker CHANNEL...``; ``CHANNEL_LAYERS`` read by
``kanal.layers.get_channel_layer()``; and the names a Channels project imports::

    from kanal.django import AllowedHostsOriginValidator, AuthMiddlewareStack
    from kanal.routing import ProtocolTypeRouter, URLRouter

    application = ProtocolTypeRouter({
        "http": get_asgi_application(),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(routes))),
    })

``scope["session"]`` is Django's session (its engine, its cookie) and ``scope["user"]``
Django's user; :func:`login` and :func:`logout` save the session. Importing this package
needs Django, not Channels nor Daphne; nothing here touches the settings before use.
Without Django it raises :class:`~kanal.exceptions.MissingDependency` naming the extra.
"""

from kanal.exceptions import MissingDependency

try:
    import django  # noqa: F401  (the one dependency of this package, checked first)
except ModuleNotFoundError as exc:
    raise MissingDependency(
        "kanal.django needs Django: pip install 'kanal[django]'",
        extra="django",
        name=exc.name,
    ) from exc

from kanal.django._application import get_default_application
from kanal.django._auth import (
    AuthMiddleware,
    AuthMiddlewareStack,
    DjangoUserLoader,
    get_user,
    login,
    logout,
)
from kanal.django._db import close_old_connections, database_sync_to_async
from kanal.django._layers import (
    DEFAULT_CHANNEL_LAYER,
    channel_layers,
    get_channel_layer,
    layer_from_settings,
)
from kanal.django._origin import AllowedHostsOriginValidator, OriginValidator
from kanal.django._sessions import (
    CookieMiddleware,
    DjangoSession,
    DjangoSessions,
    DjangoSessionStore,
    SessionMiddleware,
    SessionMiddlewareStack,
)

__all__ = [
    "DEFAULT_CHANNEL_LAYER",
    "AllowedHostsOriginValidator",
    "AuthMiddleware",
    "AuthMiddlewareStack",
    "CookieMiddleware",
    "DjangoSession",
    "DjangoSessionStore",
    "DjangoSessions",
    "DjangoUserLoader",
    "OriginValidator",
    "SessionMiddleware",
    "SessionMiddlewareStack",
    "channel_layers",
    "close_old_connections",
    "database_sync_to_async",
    "get_channel_layer",
    "get_default_application",
    "get_user",
    "layer_from_settings",
    "login",
    "logout",
]
