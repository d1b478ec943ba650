"""Channel and group name rules, identical to Django Channels' so that names carry over."""

from __future__ import annotations

import functools
import re

from kanal.exceptions import InvalidName

__all__ = [
    "MAX_NAME_LENGTH",
    "non_local_name",
    "require_valid_channel_name",
    "require_valid_group_name",
]

# Channels' limit (channels.layers.BaseChannelLayer.MAX_NAME_LENGTH). Redis keys and log lines
# stay short; a longer name is almost always a bug (an id pasted twice, a URL used as a name).
MAX_NAME_LENGTH = 100

# ASCII letters, digits, "-", "_" and "." ; a channel may end in "!suffix", which marks a
# process-specific channel: the part up to "!" names the process that reads it.
# \Z, not $: "$" also matches before a trailing newline, which would let "room\n" through
# (Channels' own check has that hole).
_CHANNEL_RE = re.compile(r"^[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?\Z", re.ASCII)
_GROUP_RE = re.compile(r"^[a-zA-Z\d\-_.]+\Z", re.ASCII)

_RULE = (
    "only ASCII letters, digits, hyphens, underscores and periods, shorter than "
    f"{MAX_NAME_LENGTH} characters"
)


# Names repeat constantly (one channel per connection, one group per room); the cache turns
# the regex match into one dict lookup. Only valid names are cached: errors raise past it.
def require_valid_channel_name(name: str, receive: bool = False) -> str:
    """Return ``name`` if it is a valid channel name, else raise :class:`InvalidName`.

    With ``receive=True`` a name that ends in ``!`` (a process's whole inbox) is refused,
    since a receiver must name one channel of the process.
    """
    if not isinstance(name, str):
        raise InvalidName(
            f"channel name must be a str, not {type(name).__name__}: {name!r}",
            name=name,
            kind="channel",
        )
    return _check_channel(name, receive)


@functools.lru_cache(maxsize=8192)
def _check_channel(name: str, receive: bool) -> str:
    if len(name) >= MAX_NAME_LENGTH or not _CHANNEL_RE.match(name):
        raise InvalidName(
            f"invalid channel name {name!r}: use {_RULE}, optionally followed by "
            "'!' and a process-specific suffix",
            name=name,
            kind="channel",
        )
    if receive and name.endswith("!"):
        raise InvalidName(
            f"cannot receive on {name!r}: a process-specific channel name needs a suffix "
            "after '!' (use the name new_channel() returned)",
            name=name,
            kind="channel",
        )
    return name


def require_valid_group_name(name: str) -> str:
    """Return ``name`` if it is a valid group name, else raise :class:`InvalidName`."""
    if not isinstance(name, str):
        raise InvalidName(
            f"group name must be a str, not {type(name).__name__}: {name!r}",
            name=name,
            kind="group",
        )
    return _check_group(name)


@functools.lru_cache(maxsize=8192)
def _check_group(name: str) -> str:
    if len(name) >= MAX_NAME_LENGTH or not _GROUP_RE.match(name):
        raise InvalidName(f"invalid group name {name!r}: use {_RULE}", name=name, kind="group")
    return name


def non_local_name(name: str) -> str:
    """The part of a channel name shared by every channel of one process.

    ``"specific.abc!xyz"`` gives ``"specific.abc!"``; a name without ``!`` is returned as is.
    """
    if "!" in name:
        return name[: name.find("!") + 1]
    return name
