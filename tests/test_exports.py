"""The curated public API: each public module's ``__all__``, and that it is documented.

A name added to or removed from a package's ``__all__`` must be added to or removed from
the set here too, so that changing the public API is always a deliberate act.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import kanal

EXPECTED: dict[str, set[str]] = {
    "kanal.django": {
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
    },
    "kanal.django.apps": {"KanalConfig"},
    "kanal": {"KanalError", "__version__"},
    "kanal.bridge": {
        "BRIDGE_CHANNEL",
        "BridgeApp",
        "BridgeStats",
        "BridgeWorker",
        "DEFAULT_ATTACH_TIMEOUT",
        "DEFAULT_DETACH_TIMEOUT",
        "DEFAULT_HEARTBEAT",
        "DEFAULT_MAX_HELD",
        "MessageType",
        "State",
        "TRANSITIONS",
        "scope_from_wire",
        "scope_to_wire",
    },
    "kanal.bridge.asgi": {"application"},
    "kanal.cli": {"build_parser", "main"},
    "kanal.classic": {
        "Channel",
        "ClassicApplication",
        "Group",
        "Message",
        "ReplyChannel",
        "Route",
        "WebsocketConsumer",
        "application_from_environment",
        "is_routing",
        "route",
        "route_class",
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
        "MqttConsumer",
        "MqttMessage",
        "NoHandler",
        "StopConsumer",
        "SyncConsumer",
        "SyncHook",
        "WebsocketConsumer",
        "add_sync_hooks",
        "format_event",
        "get_handler_name",
        "remove_sync_hooks",
        "run_sync",
        "sync_executor",
        "with_sync_hooks",
    },
    "kanal.exceptions": {
        "ASGIMessageError",
        "AppLoadError",
        "ChannelFull",
        "ClientDisconnected",
        "ConfigError",
        "ConsumerError",
        "DenyConnection",
        "EpochChanged",
        "HistoryError",
        "HistoryGap",
        "InvalidFrame",
        "InvalidHeader",
        "InvalidMessage",
        "InvalidName",
        "InvalidPosition",
        "KanalError",
        "LayerClosed",
        "LayerError",
        "LayerUnavailable",
        "LifespanError",
        "MessageTooLarge",
        "MissingDependency",
        "MqttError",
        "NoHandler",
        "NoHistory",
        "PresenceNotSupported",
        "ProtocolStateError",
        "ReceiveTimeout",
        "RouteNotFound",
        "ServerError",
        "ServiceError",
        "ServiceTimeout",
        "SessionError",
        "StopConsumer",
        "SyncContextError",
        "WorkerError",
    },
    "kanal.layers": {
        "BaseChannelLayer",
        "DIRECT_MESSAGE_TYPE",
        "DirectGroupTransport",
        "direct_message",
        "direct_text",
        "ChannelFull",
        "ChannelStats",
        "DEFAULT_CAPACITY",
        "DEFAULT_EXPIRY",
        "DEFAULT_GROUP_EXPIRY",
        "DEFAULT_LAYER_URL",
        "DEFAULT_MAX_MESSAGE_SIZE",
        "EpochChanged",
        "DEFAULT_PRESENCE_PERIOD",
        "DEFAULT_PRESENCE_TTL",
        "PRESENCE_DIFF_TYPE",
        "Notify",
        "PresenceNotSupported",
        "PresenceTracker",
        "Presences",
        "GroupStats",
        "History",
        "HistoryGap",
        "HistoryPolicy",
        "InMemoryChannelLayer",
        "InvalidMessage",
        "InvalidName",
        "InvalidPosition",
        "LayerClosed",
        "LayerError",
        "LayerStats",
        "LayerUnavailable",
        "MAX_NAME_LENGTH",
        "Message",
        "MessageCodec",
        "MessageTooLarge",
        "NoHistory",
        "Position",
        "ReceiveTimeout",
        "SyncChannelLayer",
        "backend_for",
        "get_channel_layer",
        "layer_is_configured",
        "layer_from_url",
        "non_local_name",
        "position_of",
        "register_backend",
        "require_valid_channel_name",
        "require_valid_group_name",
        "reset_channel_layers",
        "set_default_layer_provider",
    },
    "kanal.layers.ipc": {"IpcChannelLayer"},
    "kanal.layers.redis": {"EncryptedCodec", "RedisChannelLayer"},
    "kanal.middleware": {
        "AllowedOriginsMiddleware",
        "AnonymousUser",
        "AuthMiddleware",
        "BearerTokenUserLoader",
        "CookieMiddleware",
        "MemorySessionStore",
        "RedisSessionStore",
        "SESSION_USER_KEY",
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
    "kanal.protocols": {
        "message_frame",
        "HTTPLimits",
        "HTTPParser",
        "ProtocolFailure",
        "RequestBody",
        "RequestEnd",
        "RequestEvent",
        "RequestStart",
        "ResponseWriter",
        "STATUS_PHRASES",
        "WebSocketAction",
        "WebSocketClosed",
        "WebSocketConnection",
        "WebSocketEvent",
        "WebSocketMessage",
        "WebSocketPong",
        "WebSocketSession",
        "WebSocketState",
        "error_response",
        "handshake_problem",
    },
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
    "kanal.inspect": {
        "DEFAULT_WAIT",
        "INSPECT_GROUP",
        "Inspector",
        "ProcessSnapshot",
        "Responder",
        "attach",
        "attach_server",
        "process_summary",
        "take_snapshot",
    },
    "kanal.metrics": {
        "METRIC_NAMES",
        "MetricsApp",
        "ProcessSnapshot",
        "ServerExporter",
        "SnapshotCollector",
        "dashboard_data",
        "render",
        "start_listener",
        "take_snapshot",
        "worker_source",
    },
    "kanal.mqtt": {"MqttConfig", "MqttError", "MqttServer", "MqttStats"},
    "kanal.server": {"Config", "Server", "ServerStats", "load_app", "run", "run_config"},
    "kanal.testing": {
        "ApplicationCommunicator",
        "ChannelLayerConformance",
        "HttpCommunicator",
        "LiveServer",
        "ManualClock",
        "MosquittoServer",
        "MqttCommunicator",
        "PresenceConformance",
        "RedisServer",
        "WebsocketCommunicator",
        "apply_presence_diff",
        "bearer_headers",
        "free_port",
        "login_headers",
    },
    "kanal.typing": {"ASGIApp", "Message", "Receive", "Scope", "Send", "header_value"},
    "kanal.worker": {
        "Cron",
        "DEFAULT_CALL_TIMEOUT",
        "DEFAULT_SHUTDOWN_TIMEOUT",
        "Every",
        "Job",
        "CallStats",
        "SCHEDULER_CHANNEL",
        "Scheduler",
        "ServiceError",
        "ServiceTimeout",
        "Worker",
        "WorkerError",
        "call",
        "call_stats",
        "call_sync",
        "reply",
        "send_later",
        "service",
    },
}

# Public by name but with no ``__all__`` to curate: pytest loads the plugin for its
# fixtures, which tests/framework/test_pytest_plugin.py checks.
# Modules whose shape a tool prescribes, not kanal: pytest's plugin, and the management
# commands Django finds by path (each defines ``Command``).
NOT_CURATED = {
    "kanal.testing.pytest_plugin",
    "kanal.django.management",
    "kanal.django.management.commands",
    "kanal.django.management.commands.runserver",
    "kanal.django.management.commands.runworker",
}


def _public_modules() -> set[str]:
    found = {"kanal"}
    for module in pkgutil.walk_packages(kanal.__path__, prefix="kanal."):
        if not any(part.startswith("_") for part in module.name.split(".")):
            found.add(module.name)
    return found


def test_every_public_module_is_listed() -> None:
    """A new public module (no ``_`` in its path) gets an expected ``__all__`` here."""
    assert _public_modules() - NOT_CURATED == set(EXPECTED)


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_exports_are_curated(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__doc__, f"{module} has no docstring"
    assert len(mod.__all__) == len(set(mod.__all__)), f"{module}.__all__ repeats a name"
    assert set(mod.__all__) == EXPECTED[module]


def _undocumented(module: str) -> list[str]:
    """The exported classes and functions of ``module``, and their methods, with no docstring.

    A method that overrides a documented one inherits its docstring (``inspect.getdoc``).
    """
    mod = importlib.import_module(module)
    missing = []
    for name in mod.__all__:
        value = getattr(mod, name)  # every exported name resolves
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if not inspect.getdoc(value):
            missing.append(f"{module}.{name}")
        if not inspect.isclass(value):
            continue
        for attribute, member in vars(value).items():
            method = inspect.isfunction(member) or isinstance(member, classmethod | staticmethod)
            if (
                method
                and not attribute.startswith("_")
                and not inspect.getdoc(getattr(value, attribute))
            ):
                missing.append(f"{module}.{name}.{attribute}")
    return missing


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_exports_are_documented(module: str) -> None:
    assert _undocumented(module) == []


def test_the_documentation_check_finds_a_missing_docstring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kanal.cli

    monkeypatch.setattr(kanal.cli.build_parser, "__doc__", None)
    assert _undocumented("kanal.cli") == ["kanal.cli.build_parser"]
