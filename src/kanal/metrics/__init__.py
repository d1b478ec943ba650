"""Prometheus metrics and a live dashboard for kanal's processes (docs/operations.md).

``kanal serve --metrics 9100`` (and ``kanal worker --metrics 9100``) serves ``/metrics`` on
a listener of its own; ``--dashboard`` adds a web page with live charts there. The numbers
are the counters the server, the layers and the workers keep anyway (``Server.stats()``,
``layer.stats()``...), read at scrape time, so the hot path pays almost nothing for them.
Needs the ``metrics`` extra (``prometheus_client``)::

    pip install 'kanal[metrics]'
"""

from kanal.exceptions import MissingDependency

try:
    import prometheus_client  # noqa: F401 (imported here to fail early, naming the extra)
except ModuleNotFoundError as exc:
    if exc.name != "prometheus_client":
        raise
    raise MissingDependency(
        "kanal.metrics needs the metrics extra: pip install 'kanal[metrics]' "
        f"(no module named {exc.name!r})",
        extra="metrics",
        name=exc.name,
    ) from exc

from kanal.inspect._snapshot import ProcessSnapshot, take_snapshot
from kanal.metrics._app import MetricsApp, dashboard_data
from kanal.metrics._collector import METRIC_NAMES, SnapshotCollector, render
from kanal.metrics._exporter import ServerExporter, start_listener, worker_source

__all__ = [
    "METRIC_NAMES",
    "MetricsApp",
    "ProcessSnapshot",
    "ServerExporter",
    "SnapshotCollector",
    "dashboard_data",
    "render",
    "start_listener",
    "take_snapshot",
    "worker_source",
]
