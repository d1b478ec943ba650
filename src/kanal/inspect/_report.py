"""A process's snapshot as plain data (JSON, msgpack): what ``kanal inspect`` shows and
``--json`` prints, and what the dashboard draws for each process.

Counters are totals since the process started; :func:`with_rates` turns two reports of
one process into rates per second, so that a reader sees what happens now.
"""

from __future__ import annotations

from typing import Any

from kanal.inspect._snapshot import ProcessSnapshot

__all__ = ["INSPECT_GROUP", "RATED", "process_summary", "with_rates"]

#: The group every inspectable process's channel is in (kanal's own: not reported).
INSPECT_GROUP = "kanal.inspect"

#: The totals :func:`with_rates` gives a rate for.
RATED = (
    "http_requests",
    "ws_messages_received",
    "ws_messages_sent",
    "layer_sent",
    "layer_received",
    "dropped",
    "cpu_seconds",
)

_LAYER_DROPS = (
    ("full", "dropped_full"),
    ("unavailable", "unavailable"),
    ("expired", "expired"),
    ("refused", "refused"),
    ("discarded", "discarded"),
)


def process_summary(snap: ProcessSnapshot) -> dict[str, Any]:
    """``snap`` as a dict of strings, numbers and dicts of them."""
    stats = snap.server
    layers = snap.layers.values()
    drops = {reason: sum(getattr(layer, attr) for layer in layers) for reason, attr in _LAYER_DROPS}
    drops["slow_client"] = stats.ws_direct_drops if stats else 0
    worker = snap.worker
    return {
        "process": snap.process,
        "host": snap.host,
        "pid": snap.pid,
        "role": snap.role,
        "taken": snap.taken,
        "started": snap.started,
        "cpu_seconds": snap.cpu_seconds,
        "resident_bytes": snap.resident_bytes,
        "connections": snap.connections,
        "http_requests": stats.http_requests if stats else 0,
        "ws_messages_received": stats.ws_messages_received if stats else 0,
        "ws_messages_sent": (stats.ws_messages_sent + stats.direct_frames) if stats else 0,
        "layers": sorted(snap.layers),
        "layer_sent": sum(layer.sent for layer in layers),
        "layer_received": sum(layer.received for layer in layers),
        "pending": sum(layer.pending for layer in layers),
        "largest_queue": max((layer.largest_queue for layer in layers), default=0),
        "slow_closes": stats.ws_direct_slow_closes if stats else 0,
        "drops": drops,
        "dropped": sum(drops.values()),
        "direct_groups": snap.direct_groups,
        "direct_subscriptions": snap.direct_subscriptions,
        "groups": {g: n for g, n in snap.layer_groups.items() if g != INSPECT_GROUP},
        "direct": {**snap.top_groups},
        "channels": snap.channel_count,
        "busiest_channels": {**snap.busiest_channels},
        "worker": None
        if worker is None
        else {
            "busy": worker.busy,
            "handed_back": worker.handed_back,
            "handled": sum(h.count for h in worker.durations.values()),
            "failed": sum(worker.failures.values()),
        },
        "calls": {
            channel: {"calls": c.calls, "timeouts": c.timeouts, "errors": c.errors}
            for channel, c in snap.calls.items()
        },
    }


def with_rates(summary: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """``summary`` with ``rates``: per second since ``before`` (the same process's last
    summary), of each of :data:`RATED`; empty without an earlier one."""
    rates: dict[str, float] = {}
    if before is not None and before.get("pid") == summary["pid"]:
        elapsed = summary["taken"] - before["taken"]
        if elapsed > 0:
            for name in RATED:
                change = summary.get(name, 0) - before.get(name, 0)
                rates[name] = max(0.0, change / elapsed)
    return {**summary, "rates": rates}
