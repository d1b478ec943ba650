"""A connection's scope on the wire: what of it can cross the layer, and back."""

from __future__ import annotations

from typing import Any

import msgpack

from kanal.typing import Scope

__all__ = ["pack_scope", "scope_from_wire", "scope_to_wire", "unpack_scope"]

# Objects of the server's process, meaningless in another one.
_LOCAL_KEYS = frozenset({"state", "extensions", "app"})
# Server extensions whose messages the bridge relays like any other event: the worker's
# application sees them offered (kanal.groups: direct delivery, docs/direct.md).
_RELAYED_EXTENSIONS = ("kanal.groups",)


def _relayed(scope: Scope) -> dict[str, Any] | None:
    offered = scope.get("extensions") or {}
    found: dict[str, Any] = {name: {} for name in _RELAYED_EXTENSIONS if name in offered}
    return found or None


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
    relayed = _relayed(scope)
    if relayed:
        wire["extensions"] = relayed
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


def pack_scope(scope: Scope) -> bytes:
    """The scope as msgpack bytes: what :func:`scope_to_wire` keeps, packed in one C call.

    A ``bridge.open`` carries the scope as these bytes, so the layer validates and copies
    one bytes value instead of walking every header in Python (measured: about a third of
    the bridge's CPU per HTTP request went to that walk, on each side).
    """
    wire = {key: value for key, value in scope.items() if key not in _LOCAL_KEYS}
    relayed = _relayed(scope)
    if relayed:
        wire["extensions"] = relayed
    try:
        packed: bytes = msgpack.packb(wire, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):  # a value of a type msgpack does not know
        packed = msgpack.packb(scope_to_wire(scope), use_bin_type=True)
    return packed


def unpack_scope(data: bytes) -> Scope:
    """The scope :func:`pack_scope` packed, in the shapes ASGI apps expect."""
    # Arrays come back as tuples (client, server, each header); headers as a list.
    scope: Scope = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=False)
    scope["headers"] = list(scope.get("headers", ()))
    subprotocols = scope.get("subprotocols")
    if subprotocols is not None:
        scope["subprotocols"] = list(subprotocols)
    scope["extensions"] = dict(scope.get("extensions") or {})
    scope["state"] = {}
    return scope
