"""What one process tells a scrape or ``kanal inspect``: a small, picklable summary of its
counters.

Built on the process's own event loop (so that nothing changes under it), from what the
server, the layers, the worker and ``call()`` count anyway (``Server.stats()``,
``layer.stats()``, ``Worker.durations``, ``call_stats()``). With ``--workers N`` each worker
process sends one through a pipe to the supervisor, which serves them all at one scrape;
it is kept to a few kilobytes (totals, not per-channel counters), so that it fits a pipe's
buffer and never blocks the loop writing it.
"""

from __future__ import annotations

import heapq
import os
import resource
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kanal._histogram import HistogramSnapshot
from kanal.layers._registry import shared_layers
from kanal.server import ServerStats
from kanal.worker import CallStats, call_stats

if TYPE_CHECKING:
    from kanal.layers import BaseChannelLayer
    from kanal.server import Server
    from kanal.worker import Worker

__all__ = ["LayerSummary", "ProcessSnapshot", "WorkerSummary", "take_snapshot"]

#: Groups with the most local subscribers that each process reports; the exporter shows
#: the top of their sum. Bounded: group names are data, and a scrape must stay small.
TOP_GROUPS = 50
#: Channels with the most messages waiting that each process names.
TOP_CHANNELS = 20
_HOST = socket.gethostname()
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(slots=True)
class LayerSummary:
    """One layer instance's totals (``LayerStats`` without its per-name counters)."""

    sent: int = 0
    received: int = 0
    group_sends: int = 0
    dropped_full: int = 0
    unavailable: int = 0
    expired: int = 0
    refused: int = 0
    #: Freed unread: their channel was discarded (its receiver closed).
    discarded: int = 0
    #: Messages waiting in this process's channels (or buffers, on Redis), and the most in
    #: any one channel.
    pending: int = 0
    largest_queue: int = 0
    round_trips: HistogramSnapshot | None = None


@dataclass(slots=True)
class WorkerSummary:
    """A ``kanal worker``'s counts, per channel."""

    #: Per channel: seconds per message handled (failed ones too), failed instances.
    failures: dict[str, int] = field(default_factory=dict)
    durations: dict[str, HistogramSnapshot] = field(default_factory=dict)
    handed_back: int = 0
    busy: int = 0


@dataclass(slots=True)
class ProcessSnapshot:
    """Everything one process reports, at one moment."""

    #: The process's label: its index among the server's worker processes ("0" alone).
    process: str
    role: str
    pid: int
    taken: float
    started: float
    cpu_seconds: float
    resident_bytes: int
    server: ServerStats | None = None
    #: Open connections by protocol ("http", "websocket").
    connections: dict[str, int] = field(default_factory=dict)
    #: Direct delivery: groups with local subscribers, subscriptions, and the largest groups.
    direct_groups: int = 0
    direct_subscriptions: int = 0
    top_groups: dict[str, int] = field(default_factory=dict)
    #: By layer kind (the URL's scheme: memory, redis...), never the URL (it may hold a
    #: password).
    layers: dict[str, LayerSummary] = field(default_factory=dict)
    #: The layers' groups with this process's channels in them, and how many each (the
    #: largest), and the channels with the most messages waiting (0s left out), of
    #: ``channel_count`` channels the layers count.
    layer_groups: dict[str, int] = field(default_factory=dict)
    busiest_channels: dict[str, int] = field(default_factory=dict)
    channel_count: int = 0
    host: str = _HOST
    worker: WorkerSummary | None = None
    calls: dict[str, CallStats] = field(default_factory=dict)


def _start_time() -> float:
    """When this process started, in Unix time (Linux: from /proc; else: about now)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            # Field 22, after the command name in parentheses (which may hold spaces).
            ticks = int(handle.read().rpartition(")")[2].split()[19])
        with open("/proc/stat", encoding="ascii") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


_STARTED = _start_time()


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        # Elsewhere: the peak, the best the standard library knows (KiB on Linux).
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _count(item: tuple[str, int]) -> int:
    return item[1]


def _layer_kind(url: str) -> str:
    return urlsplit(url).scheme or "layer"


def _summarise(layer: BaseChannelLayer, into: LayerSummary, snapshot: ProcessSnapshot) -> None:
    stats = layer.stats()
    snapshot.channel_count += len(stats.channels)
    waiting = {name: c.pending for name, c in stats.channels.items() if c.pending}
    waiting.update(snapshot.busiest_channels)
    snapshot.busiest_channels = dict(heapq.nlargest(TOP_CHANNELS, waiting.items(), key=_count))
    groups = dict(snapshot.layer_groups)
    for group, count in layer.local_groups().items():
        groups[group] = groups.get(group, 0) + count
    snapshot.layer_groups = dict(heapq.nlargest(TOP_GROUPS, groups.items(), key=_count))
    into.sent += stats.sent
    into.received += stats.received
    into.group_sends += stats.group_sends
    into.dropped_full += stats.dropped - stats.unavailable
    into.unavailable += stats.unavailable
    into.expired += stats.expired
    into.refused += stats.refused
    into.discarded += stats.discarded
    for channel in stats.channels.values():
        into.pending += channel.pending
        into.largest_queue = max(into.largest_queue, channel.pending)
    if stats.round_trips is not None:
        into.round_trips = (
            stats.round_trips if into.round_trips is None else into.round_trips + stats.round_trips
        )


def take_snapshot(
    process: str = "0",
    *,
    role: str | None = None,
    server: Server | None = None,
    worker: Worker | None = None,
    layers: dict[str, BaseChannelLayer] | None = None,
) -> ProcessSnapshot:
    """This process's snapshot; call it on the event loop the server or worker runs on.

    ``layers`` defaults to the shared instances of ``get_channel_layer()``, by URL.
    """
    times = os.times()
    snapshot = ProcessSnapshot(
        process=process,
        role=role or ("worker" if worker is not None else "server"),
        pid=os.getpid(),
        taken=time.time(),
        started=_STARTED,
        cpu_seconds=times.user + times.system,
        resident_bytes=_resident_bytes(),
        calls=call_stats(),
    )
    direct_groups: list[str] = []
    if server is not None:
        snapshot.server = server.stats()
        counts: dict[str, int] = {"http": 0, "websocket": 0}
        for connection in list(server.state.connections):
            counts[connection.kind] = counts.get(connection.kind, 0) + 1
        snapshot.connections = counts
        direct: Any = server.state.direct
        if direct is not None:
            groups: dict[str, set[Any]] = direct.groups
            snapshot.direct_groups = len(groups)
            snapshot.direct_subscriptions = sum(map(len, groups.values()))
            largest = heapq.nlargest(TOP_GROUPS, groups.items(), key=lambda item: len(item[1]))
            snapshot.top_groups = {name: len(members) for name, members in largest}
            direct_groups = [name for name, members in groups.items() if members]
    for url, layer in (shared_layers() if layers is None else layers).items():
        summary = snapshot.layers.setdefault(_layer_kind(url), LayerSummary())
        _summarise(layer, summary, snapshot)
    # Direct delivery joins each of its groups with one channel of this process: that one
    # is the subscribers' (counted in top_groups), not a member of its own.
    for name in direct_groups:
        left = snapshot.layer_groups.get(name, 0) - 1
        if left > 0:
            snapshot.layer_groups[name] = left
        else:
            snapshot.layer_groups.pop(name, None)
    if worker is not None:
        summary_w = WorkerSummary(handed_back=worker.handed_back)
        for channel, histogram in worker.durations.items():
            summary_w.durations[channel] = histogram.snapshot()
        summary_w.failures = dict(worker.failures)
        summary_w.busy = worker.busy
        snapshot.worker = summary_w
    return snapshot
