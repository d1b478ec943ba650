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
    │   ├── PresenceNotSupported (NotImplementedError)  a backend without presence
    │   ├── ReceiveTimeout (TimeoutError)     the sync facade's receive(timeout=...)
    │   └── HistoryError                      group history (docs/history.md)
    │       ├── InvalidPosition (ValueError)  not an ``epoch:offset`` position
    │       ├── NoHistory                     the group keeps none (not configured, or
    │       │                                 a backend without history)
    │       └── HistoryGap                    what came after a position is no longer
    │           │                             kept: reload
    │           └── EpochChanged              the history itself was lost (a restarted
    │                                         Redis, a flush): positions of the old
    │                                         epoch mean nothing
    ├── SyncContextError (RuntimeError)       a sync helper called from the event loop
    ├── MissingDependency (ModuleNotFoundError)
    ├── ServiceError                          a called service raised; carries its error
    ├── ServiceTimeout (TimeoutError)         a called service did not answer in time
    ├── WorkerError                           a worker cannot run its application
    ├── ServerError                           raised by the interface server
    │   ├── ASGIMessageError (RuntimeError)   an app sent a message the protocol forbids
    │   │   └── InvalidHeader (ValueError)    a header name or value RFC 9110 forbids
    │   ├── LifespanError (RuntimeError)      the app's lifespan startup/shutdown failed
    │   ├── ClientDisconnected (OSError)      the app sent on a connection the client closed
    │   ├── ProtocolStateError (RuntimeError) a protocol object used out of order
    │   └── AppLoadError (ConfigError)        ``module:attr`` names nothing importable
    ├── MqttError                             the MQTT server: a refused subscription or publish,
    │                                         an event the mqtt protocol does not have
    ├── RouteNotFound (LookupError)           no route for a scope (path, type, channel)
    ├── ConsumerError                         a consumer could not handle a message
    │   ├── NoHandler (ValueError)            a message without "type", or no handler for it
    │   └── InvalidFrame (ValueError)         a WebSocket frame a JSON consumer cannot decode
    ├── StopConsumer                          raised by a handler to end its consumer
    ├── DenyConnection                        raised by connect() to refuse a WebSocket
    └── SessionError                          a session that cannot be loaded or saved

``InvalidName`` is a ``TypeError`` because Django Channels raises ``TypeError`` for a bad
channel name, and code written for Channels may catch that. For the same reason, once
Channels is imported, ``ChannelFull`` and ``MessageTooLarge`` are also Channels' classes of
those names (see :func:`adopt_channels_errors`).
"""

from __future__ import annotations

import sys

__all__ = [
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
        adopt_channels_errors()
        super().__init__(message)
        self.size = size
        self.limit = limit


class ChannelFull(LayerError):
    """``send()`` to a channel that already holds ``capacity`` messages.

    Nothing was sent. ``channel`` and ``capacity`` tell which channel and what its limit is.
    """

    def __init__(self, message: str, *, channel: str = "", capacity: int = 0) -> None:
        adopt_channels_errors()
        super().__init__(message)
        self.channel = channel
        self.capacity = capacity


class LayerClosed(LayerError):
    """An operation on a layer after ``close()``."""


class LayerUnavailable(LayerError, ConnectionError):
    """The layer's backing service cannot be reached within the configured time."""


class PresenceNotSupported(LayerError, NotImplementedError):
    """A presence call on a backend that does not keep presence (see ``docs/presence.md``).

    Whether a layer keeps it: ``"presence" in layer.extensions``.
    """


class ReceiveTimeout(LayerError, TimeoutError):
    """No message arrived within the timeout given to a synchronous ``receive``."""


class HistoryError(LayerError):
    """An error about a group's history (positions, recovery: docs/history.md)."""


class InvalidPosition(HistoryError, ValueError):
    """A history position that is not ``<epoch>:<offset>`` (a client's ``since``, say)."""


class NoHistory(HistoryError):
    """``group_history`` for a group that keeps no history.

    No ``history`` pattern of the layer matches the group, or the backend keeps none
    (``supports_history`` is false). ``group`` names the group.
    """

    def __init__(self, message: str, *, group: str = "") -> None:
        super().__init__(message)
        self.group = group


class HistoryGap(HistoryError):
    """The messages after the position asked for are no longer all kept.

    More than the history's ``size`` messages came since, or the oldest of them is older
    than its ``ttl``: they cannot be recovered, and the client should reload its state.
    ``position`` is the group's current position (a :class:`kanal.layers.Position`), to
    resume from after reloading; ``since`` the position that was asked for.
    """

    def __init__(self, message: str, *, group: str = "", since: object, position: object) -> None:
        super().__init__(message)
        self.group = group
        self.since = since
        self.position = position


class EpochChanged(HistoryGap):
    """The position asked for is of another epoch: the group's history was lost since.

    A restarted Redis without persistence, a flush, an expired history, or another
    memory:// process: nothing of the old epoch can be recovered; reload, then resume
    from ``position`` (of the new epoch).
    """


class SyncContextError(KanalError, RuntimeError):
    """A synchronous helper was called from a thread that runs an event loop.

    Blocking there would stop the loop it waits on; use the ``async`` method instead.
    """


class MissingDependency(KanalError, ModuleNotFoundError):
    """An optional part of kanal was imported without the package that its extra installs.

    ``extra`` names the pip extra (``pip install 'kanal[redis]'``); ``name`` is the missing
    module, as on any ``ModuleNotFoundError``.
    """

    def __init__(self, message: str, *, extra: str, name: str | None = None) -> None:
        super().__init__(message, name=name)
        self.extra = extra


class ServerError(KanalError):
    """An error raised by the interface server (``kanal.server``)."""


class ASGIMessageError(ServerError, RuntimeError):
    """An application sent an ASGI message that the protocol does not allow at that point.

    Raised from the ``send`` callable the server gave the application, e.g. a second
    ``http.response.start`` or a body longer than the declared ``Content-Length``.
    """


class InvalidHeader(ASGIMessageError, ValueError):
    """A response header from the application that cannot be sent as it is.

    The name is not an RFC 9110 token, or the value holds a byte a field value may not
    (CR, LF, NUL, another control character), so writing it would corrupt the response or
    inject header lines. Nothing was sent: the server answers 500 unless the application
    catches this and sends a valid response instead. ``name`` and ``value`` are the
    offending pair.
    """

    def __init__(self, message: str, *, name: object = None, value: object = None) -> None:
        super().__init__(message)
        self.name = name
        self.value = value


class LifespanError(ServerError, RuntimeError):
    """The application reported ``lifespan.startup.failed`` or failed during startup."""


class ClientDisconnected(ServerError, OSError):
    """The application called ``send`` after the client closed the connection.

    ASGI asks servers to raise a subclass of ``OSError`` here, so frameworks that catch
    ``OSError`` to stop streaming keep working.
    """


class ProtocolStateError(ServerError, RuntimeError):
    """A sans-I/O protocol object (:mod:`kanal.protocols`) was used out of order.

    For example WebSocket frames fed before the handshake was accepted. The server never
    does this; it is raised instead of the underlying library's own error.
    """


class MqttError(KanalError):
    """Raised by the MQTT interface server (``kanal.mqtt``) to the application.

    From ``send``: an ``mqtt.*`` event with a bad topic, QoS or payload, an unknown event
    type, or a subscription or publish the broker refused.
    """


class AppLoadError(ServerError, ConfigError):
    """An application import string (``module:attr``) that cannot be loaded."""


class RouteNotFound(KanalError, LookupError):
    """No route matches a scope: its path, its type or its channel name.

    ``value`` is what was looked up; ``tried`` lists what the router knows.
    """

    def __init__(self, message: str, *, value: object = None, tried: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.value = value
        self.tried = tried


class ConsumerError(KanalError):
    """A consumer could not handle a message."""


class NoHandler(ConsumerError, ValueError):
    """A message without a ``type`` key, or a type the consumer has no handler for.

    ``consumer`` is the consumer's class name and ``message_type`` the type (``None`` when
    the message had none).
    """

    def __init__(self, message: str, *, consumer: str = "", message_type: object = None) -> None:
        super().__init__(message)
        self.consumer = consumer
        self.message_type = message_type


class InvalidFrame(ConsumerError, ValueError):
    """A WebSocket frame that a JSON consumer cannot decode; the connection closes with 1007."""


class StopConsumer(KanalError):
    """Raised by a handler to end its consumer normally (after a disconnect, usually)."""


class DenyConnection(KanalError):
    """Raised by a WebSocket consumer's ``connect()`` to refuse the handshake (HTTP 403)."""


class SessionError(KanalError):
    """A session that cannot be loaded or saved (a bad store, a cookie too late to set)."""


class ServiceError(KanalError):
    """The service called with :func:`kanal.worker.call` raised an error.

    ``remote_type`` and ``remote_message`` are the service's exception type name and text;
    ``channel`` is the service's channel.
    """

    def __init__(
        self, message: str, *, channel: str = "", remote_type: str = "", remote_message: str = ""
    ) -> None:
        super().__init__(message)
        self.channel = channel
        self.remote_type = remote_type
        self.remote_message = remote_message


class ServiceTimeout(KanalError, TimeoutError):
    """No reply from a called service within the timeout; a late reply is discarded."""

    def __init__(self, message: str, *, channel: str = "", timeout: float = 0.0) -> None:
        super().__init__(message)
        self.channel = channel
        self.timeout = timeout


class WorkerError(KanalError):
    """A worker cannot run its application (it fails before taking a message, or misbehaves)."""


def adopt_channels_errors() -> bool:
    """Make ``ChannelFull`` and ``MessageTooLarge`` subclasses of Channels' ones, if imported.

    Code written for Channels catches ``channels.exceptions.ChannelFull``; kanal's layers
    raise kanal's. kanal never imports Channels, so the link is made when Channels is
    already imported (``channels.exceptions`` in ``sys.modules``): Channels' class is added
    to the bases of kanal's own class, which leaves Channels' classes untouched. Called
    whenever one of these errors is created (a dictionary look-up), so an ``except`` in
    Channels code sees the link; True once it is made.
    """
    module = sys.modules.get("channels.exceptions")
    if module is None:
        return False
    for ours in (ChannelFull, MessageTooLarge):
        theirs = getattr(module, ours.__name__, None)
        if isinstance(theirs, type) and not issubclass(ours, theirs):
            ours.__bases__ = (*ours.__bases__, theirs)
    return True
