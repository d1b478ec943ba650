"""``route()`` and ``route_class()``: consumers chosen by channel name (and path)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from kanal.exceptions import ConfigError

__all__ = ["Route", "find_consumers", "route", "route_class"]

Consumer = Callable[..., Any]


class Route:
    """One consumer for one channel name, optionally only for paths matching ``path``.

    ``path`` is a regular expression matched against the start of the connection's path,
    as in the original channels; its named groups are passed to the consumer as keyword
    arguments.
    """

    __slots__ = ("channel", "consumer", "path")

    def __init__(self, channel: str, consumer: Consumer, path: str | None = None) -> None:
        if not isinstance(channel, str) or not channel:
            raise ConfigError(f"route() needs a channel name, not {channel!r}")
        if not callable(consumer):
            raise ConfigError(f"route({channel!r}, ...) needs a callable, not {consumer!r}")
        self.channel = channel
        self.consumer = consumer
        self.path = re.compile(path) if path is not None else None

    def match(self, channel: str, path: str) -> dict[str, Any] | None:
        """The keyword arguments for the consumer if this route takes the event, else None."""
        if channel != self.channel:
            return None
        if self.path is None:
            return {}
        found = self.path.match(path)
        return found.groupdict() if found else None

    def __repr__(self) -> str:
        return f"route({self.channel!r}, {self.consumer!r})"


def route(channel: str, consumer: Consumer, *, path: str | None = None) -> Route:
    """Send events of ``channel`` (``"websocket.receive"``...) to ``consumer(message)``."""
    return Route(channel, consumer, path)


def route_class(consumer_class: type, *, path: str | None = None) -> list[Route]:
    """Routes for every channel a class-based consumer handles (its ``method_mapping``)."""
    mapping: dict[str, str] | None = getattr(consumer_class, "method_mapping", None)
    if not mapping:
        raise ConfigError(f"{consumer_class.__name__} has no method_mapping to route by")
    return [Route(channel, consumer_class.as_route_consumer(), path) for channel in mapping]  # type: ignore[attr-defined]


def flatten(routing: Iterable[Any]) -> list[Route]:
    """A routing list with ``route_class()``'s lists inside it, flat."""
    flat: list[Route] = []
    for item in routing:
        if isinstance(item, Route):
            flat.append(item)
        elif isinstance(item, (list, tuple)):
            flat.extend(flatten(item))
        else:
            raise ConfigError(f"a classic routing list holds route()s, not {item!r}")
    return flat


def is_routing(value: object) -> bool:
    """True for a list of ``route()``/``route_class()`` (what ``kanal serve`` may be given)."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    try:
        flatten(value)
    except ConfigError:
        return False
    return True


def find_consumers(
    routes: list[Route], channel: str, path: str
) -> list[tuple[Consumer, dict[str, Any]]]:
    """The first route that takes the event, as ``[(consumer, kwargs)]`` (empty: none)."""
    for candidate in routes:
        kwargs = candidate.match(channel, path)
        if kwargs is not None:
            return [(candidate.consumer, kwargs)]
    return []
