"""Every error kanal raises, in one tree.

Each error also derives from the builtin whose meaning it shares, so code that catches
``TypeError``, ``ValueError``, ``TimeoutError`` or ``ConnectionError`` keeps working::

    KanalError
    ├── ConfigError (ValueError)              bad option, unknown layer URL scheme
    ├── LayerError                            raised by a channel layer
    │   ├── InvalidName (TypeError, ValueError)
    │   ├── InvalidMessage (TypeError, ValueError)
    │   │   └── MessageTooLarge
    │   ├── ChannelFull                       send() to a channel at capacity
    │   ├── LayerClosed                       the layer was closed
    │   ├── LayerUnavailable (ConnectionError)
    │   └── ReceiveTimeout (TimeoutError)     the sync facade's receive(timeout=...)
    └── SyncContextError (RuntimeError)       a sync helper called from the event loop

``InvalidName`` is a ``TypeError`` because Django Channels raises ``TypeError`` for a bad
channel name, and code written for Channels may catch that.
"""

from __future__ import annotations

__all__ = [
    "ChannelFull",
    "ConfigError",
    "InvalidMessage",
    "InvalidName",
    "KanalError",
    "LayerClosed",
    "LayerError",
    "LayerUnavailable",
    "MessageTooLarge",
    "ReceiveTimeout",
    "SyncContextError",
]


class KanalError(Exception):
    """Base class of every error kanal raises on purpose."""


class ConfigError(KanalError, ValueError):
    """An option or a layer URL that kanal cannot use."""


class LayerError(KanalError):
    """An error raised by a channel layer."""


class InvalidName(LayerError, TypeError, ValueError):
    """A channel or group name that breaks the naming rules.

    ``name`` holds the offending value and ``kind`` is ``"channel"`` or ``"group"``.
    """

    def __init__(self, message: str, *, name: object = None, kind: str = "channel") -> None:
        super().__init__(message)
        self.name = name
        self.kind = kind


class InvalidMessage(LayerError, TypeError, ValueError):
    """A message that is not a dict of serialisable values.

    ``path`` names where in the message the problem is, e.g. ``message['items'][2]``.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class MessageTooLarge(InvalidMessage):
    """A message whose serialised size is above the layer's ``max_message_size``."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class ChannelFull(LayerError):
    """``send()`` to a channel that already holds ``capacity`` messages.

    Nothing was sent. ``channel`` and ``capacity`` tell which channel and what its limit is.
    """

    def __init__(self, message: str, *, channel: str = "", capacity: int = 0) -> None:
        super().__init__(message)
        self.channel = channel
        self.capacity = capacity


class LayerClosed(LayerError):
    """An operation on a layer after ``close()``."""


class LayerUnavailable(LayerError, ConnectionError):
    """The layer's backing service cannot be reached within the configured time."""


class ReceiveTimeout(LayerError, TimeoutError):
    """No message arrived within the timeout given to a synchronous ``receive``."""


class SyncContextError(KanalError, RuntimeError):
    """A synchronous helper was called from a thread that runs an event loop.

    Blocking there would stop the loop it waits on; use the ``async`` method instead.
    """
