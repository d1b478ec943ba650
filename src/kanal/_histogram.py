"""A latency histogram cheap enough for a hot path: fixed buckets, one list increment.

The server (HTTP request latency), the Redis layer (round trips), the worker (task
durations) and ``call()`` (service latency) each keep one; ``kanal.metrics`` exports them
as Prometheus histograms at scrape time. Observing is a ``bisect`` and two additions, with
no lock: each histogram is only written by its own event loop's thread. Snapshots are plain
tuples, so that they travel between processes (``--workers``) and add up.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

__all__ = ["LATENCY_BUCKETS", "Histogram", "HistogramSnapshot"]

#: Upper bounds in seconds, from half a millisecond (a Redis round trip on loopback, a small
#: HTTP response) to ten seconds (a service call's default timeout), about 2.5 times apart:
#: Prometheus' own default buckets with the sub-5 ms range a local server lives in.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Counts per bucket (not cumulative; the last one is above every bound) and the sum."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        """How many values were observed."""
        return sum(self.counts)

    def __add__(self, other: HistogramSnapshot) -> HistogramSnapshot:
        if other.bounds != self.bounds:
            raise ValueError("cannot add histograms with different buckets")
        return HistogramSnapshot(
            self.bounds,
            tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
            self.total + other.total,
        )


class Histogram:
    """Counts of observed values per bucket of ``bounds`` (seconds, increasing)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count ``value``: in the first bucket whose bound is at least ``value``."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def copy(self) -> Histogram:
        """An independent copy."""
        twin = Histogram(self.bounds)
        twin.counts[:] = self.counts
        twin.total = self.total
        return twin

    def snapshot(self) -> HistogramSnapshot:
        """A copy, safe to keep, send to another process and add to others."""
        return HistogramSnapshot(self.bounds, tuple(self.counts), self.total)
