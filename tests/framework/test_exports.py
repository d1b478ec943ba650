"""The framework packages' curated exports: each name resolves and is documented."""

from __future__ import annotations

import importlib
import inspect

import pytest

EXPECTED = {
    "kanal.typing": {"ASGIApp", "Message", "Receive", "Scope", "Send", "header_value"},
    "kanal.routing": {
        "ChannelNameRouter",
        "Converter",
        "IntConverter",
        "PathConverter",
        "ProtocolTypeRouter",
        "Route",
        "RouteNotFound",
        "SlugConverter",
        "StrConverter",
        "URLRouter",
        "UUIDConverter",
        "path",
        "re_path",
        "register_converter",
        "reject_scope",
    },
    "kanal.consumers": {
        "AsyncConsumer",
        "AsyncHttpConsumer",
        "AsyncJsonWebsocketConsumer",
        "AsyncSseConsumer",
        "AsyncWebsocketConsumer",
        "ConsumerError",
        "DenyConnection",
        "InvalidFrame",
        "JsonWebsocketConsumer",
        "NoHandler",
        "StopConsumer",
        "SyncConsumer",
        "WebsocketConsumer",
        "format_event",
        "get_handler_name",
        "sync_executor",
    },
    "kanal.middleware": {
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
    },
}


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_exports_are_curated_and_documented(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__doc__
    assert set(mod.__all__) == EXPECTED[module]
    for name in mod.__all__:
        value = getattr(mod, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__doc__, f"{module}.{name} has no docstring"
            for attribute, member in vars(value).items():
                if inspect.isfunction(member) and not attribute.startswith("_"):
                    assert member.__doc__, f"{module}.{name}.{attribute} has no docstring"


def test_testing_exports_the_framework_tools() -> None:
    import kanal.testing

    for name in (
        "ApplicationCommunicator",
        "HttpCommunicator",
        "WebsocketCommunicator",
        "LiveServer",
        "login_headers",
        "bearer_headers",
    ):
        assert name in kanal.testing.__all__
        assert getattr(kanal.testing, name).__doc__
