"""Checks and parsers of layer options: one place for every backend's constructor and URL.

The parsers turn a URL's query-string value into an option (``?capacity=200``) and raise
``ValueError``, which :meth:`BaseChannelLayer.from_url` reports with the URL. The checks
raise :class:`~kanal.exceptions.ConfigError` for a bad constructor argument.
"""

from __future__ import annotations

from typing import Any

from kanal.exceptions import ConfigError

__all__ = [
    "boolean",
    "capacity_list",
    "comma_list",
    "history_list",
    "positive_float",
    "positive_int",
    "require_positive_int",
    "require_positive_number",
]


def positive_int(value: str) -> int:
    """``"200"`` -> ``200``; zero and negatives are refused."""
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def positive_float(value: str) -> float:
    """``"0.5"`` -> ``0.5``; zero, negatives and NaN are refused."""
    number = float(value)
    if not number > 0:
        raise ValueError("must be a positive number")
    return number


def boolean(value: str) -> bool:
    """``1/true/yes/on`` and ``0/false/no/off`` (any case; empty is false)."""
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def comma_list(value: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (empty items dropped)."""
    return [item for item in value.split(",") if item]


def capacity_list(value: str) -> list[tuple[str, int]]:
    """``"http.request:200,websocket.*:50"`` -> ``[("http.request", 200), ...]``."""
    pairs = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        pattern, sep, number = item.rpartition(":")
        if not sep or not pattern:
            raise ValueError(f"expected pattern:capacity, got {item!r}")
        pairs.append((pattern, positive_int(number)))
    return pairs


def history_list(value: str) -> list[tuple[str, dict[str, Any]]]:
    """``"chat.*:100:300,news.*:20"`` -> ``[("chat.*", {"size": 100, "ttl": 300.0}), ...]``.

    Each item is ``pattern:size[:ttl]`` (ttl in seconds; the default when left out).
    """
    items: list[tuple[str, dict[str, Any]]] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise ValueError(f"expected pattern:size[:ttl], got {item!r}")
        policy: dict[str, Any] = {"size": positive_int(parts[1])}
        if len(parts) == 3:
            policy["ttl"] = positive_float(parts[2])
        items.append((parts[0], policy))
    return items


def require_positive_number(name: str, value: Any) -> float:
    """``value`` as a float if it is a positive number of seconds, else ``ConfigError``."""
    if not (isinstance(value, (int, float)) and value > 0):
        raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def require_positive_int(name: str, value: Any) -> int:
    """``value`` if it is a positive integer, else ``ConfigError``."""
    if not (isinstance(value, int) and value > 0):
        raise ConfigError(f"{name} must be a positive integer, not {value!r}")
    return value
