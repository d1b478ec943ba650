"""``X-Forwarded-For`` / ``X-Forwarded-Proto`` from trusted reverse proxies."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

__all__ = ["apply_proxy_headers"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _trusted(spec: str) -> tuple[bool, frozenset[str], tuple[_Network, ...]]:
    """Parse ``"127.0.0.1, 10.0.0.0/8"`` or ``"*"`` once per distinct value."""
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if "*" in items:
        return True, frozenset(), ()
    hosts: set[str] = set()
    networks: list[_Network] = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            hosts.add(item)  # a non-IP peer such as a unix socket path
    return False, frozenset(hosts), tuple(networks)


def _is_trusted(host: str, spec: str) -> bool:
    everyone, hosts, networks = _trusted(spec)
    if everyone or host in hosts:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def apply_proxy_headers(scope: dict[str, Any], forwarded_allow_ips: str) -> None:
    """Replace ``client`` and ``scheme`` in ``scope`` with what a trusted proxy forwarded.

    The client address is the right-most ``X-Forwarded-For`` entry that is not itself a
    trusted proxy: entries further left were written by the client and can be forged.
    """
    client = scope.get("client")
    peer = client[0] if client else ""
    if not _is_trusted(peer, forwarded_allow_ips):
        return
    forwarded_for = forwarded_proto = None
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            forwarded_for = value
        elif name == b"x-forwarded-proto":
            forwarded_proto = value
    if forwarded_proto is not None:
        proto = forwarded_proto.decode("latin-1").split(",")[-1].strip().lower()
        if scope["type"] == "websocket":
            proto = {"http": "ws", "https": "wss"}.get(proto, proto)
        if proto in ("http", "https", "ws", "wss"):
            scope["scheme"] = proto
    if forwarded_for is not None:
        hops = [h.strip() for h in forwarded_for.decode("latin-1").split(",") if h.strip()]
        for host in reversed(hops):
            if not _is_trusted(host, forwarded_allow_ips) or host is hops[0]:
                scope["client"] = (host, 0)
                break
