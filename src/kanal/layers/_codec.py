"""Message validation and serialisation: one msgpack codec shared by every backend.

Every backend, the in-memory one included, encodes a message at ``send`` and decodes it at
``receive``. So a message that works in a test works in production, and a caller that
changes its dict after sending does not change what was sent.

What msgpack carries: ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``, ``bytes``,
``list``/``tuple`` (received as ``list``) and ``dict``. Anything else is refused at ``send``
with an error that names where in the message it sits.
"""

from __future__ import annotations

from typing import Any

import msgpack

from kanal.exceptions import InvalidMessage, MessageTooLarge

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Decoded", "MessageCodec"]

# 1 MiB: the same order as Redis' practical limits for one list element moved around often,
# and far above any sane chat or event message. Larger payloads belong in storage, with the
# message carrying a reference. Configurable per layer.
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class MessageCodec:
    """Turns messages into bytes and back, enforcing the message rules.

    Subclasses may wrap the bytes (the Redis layer encrypts them); they override
    :meth:`seal` and :meth:`open`, which default to identity.
    """

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        if max_message_size <= 0:
            raise ValueError(f"max_message_size must be positive, not {max_message_size!r}")
        self.max_message_size = max_message_size

    def encode(self, message: dict[str, Any], destination: str = "") -> bytes:
        """Validate and serialise ``message``; ``destination`` only improves error texts."""
        if type(message) is not dict and not isinstance(message, dict):
            raise InvalidMessage(
                f"message{_to(destination)} must be a dict, not {type(message).__name__}",
                path="message",
            )
        for key in message:
            if type(key) is not str:
                raise InvalidMessage(
                    f"message{_to(destination)} has a key that is not a str: {key!r}",
                    path="message",
                )
        try:
            for value in message.values():
                # msgpack packs a tuple used as a dict key, but it would come back as an
                # unhashable list and the receiver could not decode the message: refuse it
                # here. Only containers are walked, so flat messages cost one check a value.
                if type(value) in _CONTAINERS and not _keys_ok(value):
                    raise TypeError("a dict key must be a str, int, float, bytes or None")
            data: bytes = msgpack.packb(message, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            path, value = _find_unserialisable(message, "message")
            path = path or "message"
            raise InvalidMessage(
                f"message{_to(destination)} cannot be serialised: {path} is "
                f"{_describe(value)} ({exc}); messages carry None, bool, int, float, str, "
                "bytes, lists and dicts with str keys",
                path=path,
            ) from None
        if len(data) > self.max_message_size:
            raise MessageTooLarge(
                f"message{_to(destination)} is {len(data)} bytes serialised, above the "
                f"limit of {self.max_message_size} bytes (max_message_size)",
                size=len(data),
                limit=self.max_message_size,
            )
        return self.seal(data)

    def decode(self, data: bytes) -> dict[str, Any]:
        """Turn bytes made by :meth:`encode` back into a fresh message dict."""
        message: dict[str, Any] = msgpack.unpackb(self.open(data), raw=False, strict_map_key=False)
        return message

    def seal(self, data: bytes) -> bytes:
        """Hook for subclasses that wrap serialised messages (encryption)."""
        return data

    def open(self, data: bytes) -> bytes:
        """Inverse of :meth:`seal`."""
        return data


class Decoded:
    """A message decoded once for several receivers; :meth:`fresh` gives each its own copy.

    A group message that reaches many channels of one process is decoded (and decrypted)
    once. Each receiver still gets a message of its own: every dict and list is copied, at
    every depth, and only immutable values (str, bytes, numbers, None) are shared. So a
    receiver that changes its message changes nobody else's, exactly as if it had decoded
    the bytes itself, for a fraction of the cost (two ``dict.copy`` calls for a chat line
    with one nested dict, against a full msgpack decode).
    """

    __slots__ = ("_message", "_plan")

    #: Deeper messages are refused (ValueError): copying them would recurse as deep, on
    #: whatever stack the receiver has. Each receiver then decodes its own.
    MAX_DEPTH = 32

    def __init__(self, message: dict[str, Any]) -> None:
        self._message = message
        # Where the containers are, found once: copying then visits only them.
        self._plan = _plan(message, self.MAX_DEPTH)

    def fresh(self) -> dict[str, Any]:
        """A new copy of the message (never the one kept here)."""
        message = self._message
        copy = message.copy()
        for key, inner in self._plan:
            copy[key] = _copy(message[key], inner)
        return copy


# For each container inside a dict or list: its key (or index) and its own plan.
_Plan = tuple[tuple[Any, "_Plan"], ...]


def _plan(value: dict[Any, Any] | list[Any], depth: int) -> _Plan:
    if depth <= 0:
        raise ValueError("message nested too deeply to share")
    items = value.items() if type(value) is dict else enumerate(value)
    return tuple((key, _plan(item, depth - 1)) for key, item in items if type(item) in (dict, list))


def _copy(value: Any, plan: _Plan) -> Any:
    copy = value.copy()
    for key, inner in plan:
        copy[key] = _copy(value[key], inner)
    return copy


_CONTAINERS = (dict, list, tuple)
_KEY_TYPES = (str, int, float, bytes, type(None))


def _keys_ok(value: object) -> bool:
    """False if a dict inside ``value`` has a key msgpack cannot bring back."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, _KEY_TYPES):
                return False
            if type(item) in _CONTAINERS and not _keys_ok(item):
                return False
    elif isinstance(value, (list, tuple)):
        for item in value:
            if type(item) in _CONTAINERS and not _keys_ok(item):
                return False
    return True


def _to(destination: str) -> str:
    return f" to {destination!r}" if destination else ""


def _describe(value: object) -> str:
    if isinstance(value, int):
        return f"an int out of the 64-bit range ({value})"
    return f"a {type(value).__name__} ({value!r:.60})"


def _find_unserialisable(value: object, path: str) -> tuple[str, object]:
    """Walk ``value`` and return the path and value of the first thing msgpack refuses."""
    if value is None or isinstance(value, (bool, float, str, bytes)):
        return "", None
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return "", None
        return path, value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, _KEY_TYPES):
                return f"{path} key {key!r}", key
            found, bad = _find_unserialisable(item, f"{path}[{key!r}]")
            if found:
                return found, bad
        return "", None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found, bad = _find_unserialisable(item, f"{path}[{index}]")
            if found:
                return found, bad
        return "", None
    return path, value
