"""The channel layer: named channels and groups shared by every process of an application.

Pick a backend by URL with :func:`get_channel_layer` (``KANAL_LAYER``, default ``memory://``)
or construct one directly. Every backend subclasses :class:`BaseChannelLayer` and passes
the conformance suite in :mod:`kanal.testing`.
"""

from kanal.exceptions import (
    ChannelFull,
    EpochChanged,
    HistoryGap,
    InvalidMessage,
    InvalidName,
    InvalidPosition,
    LayerClosed,
    LayerError,
    LayerUnavailable,
    MessageTooLarge,
    NoHistory,
    PresenceNotSupported,
    ReceiveTimeout,
)
from kanal.layers._base import (
    DEFAULT_CAPACITY,
    DEFAULT_EXPIRY,
    DEFAULT_GROUP_EXPIRY,
    DEFAULT_PRESENCE_PERIOD,
    DEFAULT_PRESENCE_TTL,
    BaseChannelLayer,
    Message,
)
from kanal.layers._codec import DEFAULT_MAX_MESSAGE_SIZE, MessageCodec
from kanal.layers._direct import (
    DIRECT_MESSAGE_TYPE,
    DirectGroupTransport,
    direct_message,
    direct_text,
)
from kanal.layers._history import History, HistoryPolicy, Position, position_of
from kanal.layers._memory import InMemoryChannelLayer
from kanal.layers._names import (
    MAX_NAME_LENGTH,
    non_local_name,
    require_valid_channel_name,
    require_valid_group_name,
)
from kanal.layers._presence import PRESENCE_DIFF_TYPE, Notify, Presences, PresenceTracker
from kanal.layers._registry import (
    DEFAULT_LAYER_URL,
    backend_for,
    get_channel_layer,
    layer_from_url,
    layer_is_configured,
    register_backend,
    reset_channel_layers,
    set_default_layer_provider,
)
from kanal.layers._stats import ChannelStats, GroupStats, LayerStats
from kanal.layers._sync import SyncChannelLayer

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_EXPIRY",
    "DEFAULT_GROUP_EXPIRY",
    "DEFAULT_LAYER_URL",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PRESENCE_PERIOD",
    "DEFAULT_PRESENCE_TTL",
    "DIRECT_MESSAGE_TYPE",
    "MAX_NAME_LENGTH",
    "PRESENCE_DIFF_TYPE",
    "BaseChannelLayer",
    "ChannelFull",
    "ChannelStats",
    "DirectGroupTransport",
    "EpochChanged",
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
    "Message",
    "MessageCodec",
    "MessageTooLarge",
    "NoHistory",
    "Notify",
    "Position",
    "PresenceNotSupported",
    "PresenceTracker",
    "Presences",
    "ReceiveTimeout",
    "SyncChannelLayer",
    "backend_for",
    "direct_message",
    "direct_text",
    "get_channel_layer",
    "layer_from_url",
    "layer_is_configured",
    "non_local_name",
    "position_of",
    "register_backend",
    "require_valid_channel_name",
    "require_valid_group_name",
    "reset_channel_layers",
    "set_default_layer_provider",
]
