"""Snapshots to Prometheus metric families, at scrape time, with ``prometheus_client``.

Nothing here runs between scrapes: the counters are the ones the server, the layers and
the worker keep anyway, read once per scrape. Every series has a ``process`` label (the
worker process's index, "0" alone), so that one scrape of a ``--workers N`` server shows
each process; ``sum without (process)`` adds them up. A process restarted by the
supervisor starts its counters from zero, which Prometheus' ``rate()`` takes as a reset.

The list of names, with what each means, is docs/operations.md's; :data:`METRIC_NAMES`
holds it as code (a test compares the two and a live scrape).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kanal._histogram import HistogramSnapshot
from kanal.inspect._snapshot import ProcessSnapshot

__all__ = ["METRIC_NAMES", "TOP_GROUPS_EXPORTED", "SnapshotCollector", "render"]

#: Groups exported by ``kanal_direct_group_subscribers``: the largest, over every process.
TOP_GROUPS_EXPORTED = 20

# name (without _total for counters: prometheus_client adds it) -> help
_HELP: dict[str, str] = {
    "kanal_process": "A kanal process reporting to this endpoint (labels: pid, role).",
    "kanal_process_start_time_seconds": "When the process started, in Unix time.",
    "kanal_process_cpu_seconds": "CPU time the process used (user and system).",
    "kanal_process_resident_memory_bytes": "Resident memory of the process.",
    "kanal_processes_reporting": "Processes whose counters this scrape holds.",
    "kanal_processes_expected": "Processes this endpoint serves (--workers).",
    "kanal_connections_open": "Connections open now, by protocol.",
    "kanal_connections_accepted": "Connections accepted, by protocol (websocket: handshakes).",
    "kanal_connections_refused": (
        "Connections refused, by protocol: http answered 503 past --limit-concurrency, "
        "websocket handshakes invalid or denied by the application."
    ),
    "kanal_http_requests": "HTTP responses, by status (0: none was started).",
    "kanal_http_request_duration_seconds": "Seconds from a request's head to its response's end.",
    "kanal_websocket_messages_received": "WebSocket messages received from clients.",
    "kanal_websocket_messages_sent": (
        "WebSocket messages sent: by the application (app) or as direct broadcasts (direct)."
    ),
    "kanal_websocket_received_bytes": "Bytes read from WebSocket connections.",
    "kanal_websocket_sent_bytes": "Bytes written to WebSocket connections.",
    "kanal_websocket_closes": "Accepted WebSockets that ended, by close code.",
    "kanal_websocket_ping_timeouts": "WebSockets closed (1011) for a pong that did not come.",
    "kanal_websocket_slow_closes": (
        "WebSockets closed (1013) for leaving more than ws_direct_buffer_limit unread."
    ),
    "kanal_backpressure_pauses": (
        "Times a byte budget was reached (docs/server.md, Limits), by reason: write (a "
        "client not reading), read_app (the application behind), read_peer, read_handshake."
    ),
    "kanal_dropped_messages": (
        "Messages dropped, by source (server, or the layer's kind) and reason: full (a "
        "channel at capacity), unavailable (the layer's backend unreachable), expired, "
        "refused (undecodable), discarded (for a channel whose receiver closed), slow_client "
        "(a broadcast skipped for a WebSocket not reading)."
    ),
    "kanal_direct_broadcasts": "Direct broadcasts this process received for its subscribers.",
    "kanal_direct_groups": "Groups with direct subscribers in this process.",
    "kanal_direct_subscriptions": "Direct subscriptions (connection and group) in this process.",
    "kanal_direct_group_subscribers": (
        f"Direct subscribers of the {TOP_GROUPS_EXPORTED} largest groups, over every process."
    ),
    "kanal_layer_messages_sent": "Messages the layer put into channels (group deliveries too).",
    "kanal_layer_group_sends": "group_send calls.",
    "kanal_layer_messages_received": "Messages received from the channel layer.",
    "kanal_layer_pending_messages": "Messages waiting in this process's channels or buffers.",
    "kanal_layer_largest_queue_messages": "Messages waiting in this process's fullest channel.",
    "kanal_layer_round_trip_seconds": "Seconds per round trip to the layer's backend (Redis).",
    "kanal_worker_task_duration_seconds": "Seconds a worker took per message, by channel.",
    "kanal_worker_task_failures": "Worker application instances that failed, by channel.",
    "kanal_worker_handed_back": "Messages a stopping worker handed back to their channel.",
    "kanal_worker_busy": "Worker instances handling a message now.",
    "kanal_service_calls": "call() requests, by service channel.",
    "kanal_service_call_timeouts": "call() requests that got no reply in time.",
    "kanal_service_call_errors": "call() requests the service answered with an error.",
    "kanal_service_call_duration_seconds": "Seconds from a call() request to its reply.",
}

_COUNTERS = {
    "kanal_process_cpu_seconds",
    "kanal_connections_accepted",
    "kanal_connections_refused",
    "kanal_http_requests",
    "kanal_websocket_messages_received",
    "kanal_websocket_messages_sent",
    "kanal_websocket_received_bytes",
    "kanal_websocket_sent_bytes",
    "kanal_websocket_closes",
    "kanal_websocket_ping_timeouts",
    "kanal_websocket_slow_closes",
    "kanal_backpressure_pauses",
    "kanal_dropped_messages",
    "kanal_direct_broadcasts",
    "kanal_layer_messages_sent",
    "kanal_layer_group_sends",
    "kanal_layer_messages_received",
    "kanal_worker_task_failures",
    "kanal_worker_handed_back",
    "kanal_service_calls",
    "kanal_service_call_timeouts",
    "kanal_service_call_errors",
}
_HISTOGRAMS = {
    "kanal_http_request_duration_seconds",
    "kanal_layer_round_trip_seconds",
    "kanal_worker_task_duration_seconds",
    "kanal_service_call_duration_seconds",
}


def _exposed(name: str) -> str:
    if name in _COUNTERS:
        return name + "_total"
    if name == "kanal_process":
        return name + "_info"
    return name


#: Every metric name as it appears in the exposition (counters with ``_total``, histograms
#: without their ``_bucket``/``_sum``/``_count`` series).
METRIC_NAMES: frozenset[str] = frozenset(_exposed(name) for name in _HELP)


class _Families:
    """The families of one scrape, created on first use, with their label names."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def _get(self, name: str, labels: Sequence[str]) -> Metric:
        family = self._families.get(name)
        if family is None:
            help_text = _HELP[name]
            if name in _COUNTERS:
                family = CounterMetricFamily(name, help_text, labels=labels)
            elif name in _HISTOGRAMS:
                family = HistogramMetricFamily(name, help_text, labels=labels)
            elif name == "kanal_process":
                family = InfoMetricFamily(name, help_text, labels=labels)
            else:
                family = GaugeMetricFamily(name, help_text, labels=labels)
            self._families[name] = family
        return family

    def add(self, name: str, labels: dict[str, str], value: float) -> None:
        family = self._get(name, list(labels))
        family.add_metric(list(labels.values()), value)  # type: ignore[attr-defined]

    def info(self, name: str, labels: dict[str, str], value: dict[str, str]) -> None:
        family = self._get(name, list(labels))
        family.add_metric(list(labels.values()), value)  # type: ignore[attr-defined]

    def histogram(self, name: str, labels: dict[str, str], snapshot: HistogramSnapshot) -> None:
        family = self._get(name, list(labels))
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip(snapshot.bounds, snapshot.counts, strict=False):
            cumulative += count
            buckets.append((repr(float(bound)), cumulative))
        buckets.append(("+Inf", snapshot.count))
        family.add_metric(  # type: ignore[attr-defined]
            list(labels.values()), buckets, sum_value=snapshot.total
        )

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


def _process(families: _Families, snap: ProcessSnapshot) -> None:
    p = {"process": snap.process}
    families.info("kanal_process", p, {"pid": str(snap.pid), "role": snap.role})
    families.add("kanal_process_start_time_seconds", p, snap.started)
    families.add("kanal_process_cpu_seconds", p, snap.cpu_seconds)
    families.add("kanal_process_resident_memory_bytes", p, snap.resident_bytes)


def _server(families: _Families, snap: ProcessSnapshot) -> None:
    stats = snap.server
    if stats is None:
        return
    p = {"process": snap.process}
    add = families.add
    for protocol in ("http", "websocket"):
        add(
            "kanal_connections_open", {**p, "protocol": protocol}, snap.connections.get(protocol, 0)
        )
    add("kanal_connections_accepted", {**p, "protocol": "http"}, stats.http_connections)
    add("kanal_connections_accepted", {**p, "protocol": "websocket"}, stats.ws_accepted)
    add("kanal_connections_refused", {**p, "protocol": "http"}, stats.refused_connections)
    add("kanal_connections_refused", {**p, "protocol": "websocket"}, stats.ws_rejected)
    for status, count in sorted(stats.http_statuses.items()):
        add("kanal_http_requests", {**p, "status": str(status)}, count)
    if stats.http_latency is not None:
        families.histogram("kanal_http_request_duration_seconds", p, stats.http_latency.snapshot())
    add("kanal_websocket_messages_received", p, stats.ws_messages_received)
    add("kanal_websocket_messages_sent", {**p, "kind": "app"}, stats.ws_messages_sent)
    add("kanal_websocket_messages_sent", {**p, "kind": "direct"}, stats.direct_frames)
    add("kanal_websocket_received_bytes", p, stats.ws_bytes_received)
    add("kanal_websocket_sent_bytes", p, stats.ws_bytes_sent)
    for code, count in sorted(stats.ws_close_codes.items()):
        add("kanal_websocket_closes", {**p, "code": str(code)}, count)
    add("kanal_websocket_ping_timeouts", p, stats.ws_ping_timeouts)
    add("kanal_websocket_slow_closes", p, stats.ws_direct_slow_closes)
    for reason, count in (
        ("write", stats.write_pauses),
        ("read_app", stats.read_pauses_app),
        ("read_peer", stats.read_pauses_peer),
        ("read_handshake", stats.read_pauses_handshake),
    ):
        add("kanal_backpressure_pauses", {**p, "reason": reason}, count)
    add(
        "kanal_dropped_messages",
        {**p, "source": "server", "reason": "slow_client"},
        stats.ws_direct_drops,
    )
    add("kanal_direct_broadcasts", p, stats.direct_messages)
    add("kanal_direct_groups", p, snap.direct_groups)
    add("kanal_direct_subscriptions", p, snap.direct_subscriptions)


def _layers(families: _Families, snap: ProcessSnapshot) -> None:
    add = families.add
    for kind, layer in sorted(snap.layers.items()):
        labels = {"process": snap.process, "layer": kind}
        add("kanal_layer_messages_sent", labels, layer.sent)
        add("kanal_layer_group_sends", labels, layer.group_sends)
        add("kanal_layer_messages_received", labels, layer.received)
        add("kanal_layer_pending_messages", labels, layer.pending)
        add("kanal_layer_largest_queue_messages", labels, layer.largest_queue)
        for reason, count in (
            ("full", layer.dropped_full),
            ("unavailable", layer.unavailable),
            ("expired", layer.expired),
            ("refused", layer.refused),
            ("discarded", layer.discarded),
        ):
            drop = {"process": snap.process, "source": kind, "reason": reason}
            add("kanal_dropped_messages", drop, count)
        if layer.round_trips is not None:
            families.histogram("kanal_layer_round_trip_seconds", labels, layer.round_trips)


def _work(families: _Families, snap: ProcessSnapshot) -> None:
    p = {"process": snap.process}
    worker = snap.worker
    if worker is not None:
        for channel, durations in sorted(worker.durations.items()):
            labels = {**p, "channel": channel}
            families.histogram("kanal_worker_task_duration_seconds", labels, durations)
            families.add("kanal_worker_task_failures", labels, worker.failures.get(channel, 0))
        families.add("kanal_worker_handed_back", p, worker.handed_back)
        families.add("kanal_worker_busy", p, worker.busy)
    for service, stats in sorted(snap.calls.items()):
        labels = {**p, "service": service}
        families.add("kanal_service_calls", labels, stats.calls)
        families.add("kanal_service_call_timeouts", labels, stats.timeouts)
        families.add("kanal_service_call_errors", labels, stats.errors)
        families.histogram("kanal_service_call_duration_seconds", labels, stats.latency.snapshot())


def top_groups(snapshots: Iterable[ProcessSnapshot], limit: int) -> list[tuple[str, int]]:
    """The groups with the most direct subscribers, over every process, largest first."""
    totals: dict[str, int] = {}
    for snap in snapshots:
        for group, count in snap.top_groups.items():
            totals[group] = totals.get(group, 0) + count
    return heapq.nlargest(limit, totals.items(), key=lambda item: (item[1], item[0]))


class SnapshotCollector(Collector):
    """A ``prometheus_client`` collector over snapshots taken for one scrape."""

    def __init__(self, snapshots: Sequence[ProcessSnapshot], expected: int) -> None:
        self.snapshots = snapshots
        self.expected = expected

    def collect(self) -> Iterable[Metric]:
        families = _Families()
        families.add("kanal_processes_reporting", {}, len(self.snapshots))
        families.add("kanal_processes_expected", {}, self.expected)
        for snap in self.snapshots:
            _process(families, snap)
            _server(families, snap)
            _layers(families, snap)
            _work(families, snap)
        for group, count in top_groups(self.snapshots, TOP_GROUPS_EXPORTED):
            families.add("kanal_direct_group_subscribers", {"group": group}, count)
        return list(families)


def render(snapshots: Sequence[ProcessSnapshot], expected: int) -> bytes:
    """The Prometheus text exposition of ``snapshots``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshots, expected))
    return generate_latest(registry)
