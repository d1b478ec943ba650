"""A connection's scope on the wire: what of it can cross the layer, and back."""

from __future__ import annotations

from typing import Any

from kanal.typing import Scope

__all__ = ["scope_from_wire", "scope_to_wire"]

# Objects of the server's process, meaningless in another one.
_LOCAL_KEYS = frozenset({"state", "extensions", "app"})


def scope_to_wire(scope: Scope) -> dict[str, Any]:
    """The parts of an ASGI scope that can travel through the layer (msgpack types).

    ``state`` (lifespan state, arbitrary objects) and ``extensions`` stay with the server.
    """
    wire: dict[str, Any] = {}
    for key, value in scope.items():
        if key in _LOCAL_KEYS:
            continue
        if key == "headers":
            wire[key] = [[bytes(name), bytes(val)] for name, val in value]
        elif isinstance(value, tuple):
            wire[key] = list(value)
        elif isinstance(value, (str, bytes, int, float, bool, list, dict)) or value is None:
            wire[key] = value
    return wire


def scope_from_wire(wire: dict[str, Any]) -> Scope:
    """Turn a scope from :func:`scope_to_wire` back into the shapes ASGI apps expect."""
    scope = dict(wire)
    scope["headers"] = [(name, val) for name, val in wire.get("headers", [])]
    for key in ("client", "server"):
        if isinstance(scope.get(key), list):
            scope[key] = tuple(scope[key])
    scope.setdefault("extensions", {})
    scope["state"] = {}
    return scope
