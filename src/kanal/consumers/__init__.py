"""Consumers: one instance per connection, handlers dispatched by message ``type``.

The names are Django Channels' (``AsyncWebsocketConsumer``, ``JsonWebsocketConsumer``,
``AsyncHttpConsumer``...), so Channels code ports by changing imports.
"""

from kanal.consumers._base import AsyncConsumer, SyncConsumer, get_handler_name
from kanal.consumers._http import AsyncHttpConsumer, AsyncSseConsumer, format_event
from kanal.consumers._mqtt import MqttConsumer, MqttMessage
from kanal.consumers._threads import (
    SyncHook,
    add_sync_hooks,
    remove_sync_hooks,
    run_sync,
    sync_executor,
    with_sync_hooks,
)
from kanal.consumers._websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from kanal.exceptions import (
    ConsumerError,
    DenyConnection,
    InvalidFrame,
    NoHandler,
    StopConsumer,
)

__all__ = [
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
]
