"""Shared output for every benchmark suite: a table for people, a JSON line per figure.

Each figure is measured for kanal and for its peers in the same run, repeated, and reported
as the median of the repeats; ratios compare medians within the run, since this kind of
machine is too noisy for comparisons across runs.
"""

from __future__ import annotations

import asyncio
import json
import platform
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    """One measured quantity for one implementation."""

    suite: str  # e.g. "layers.memory"
    name: str  # e.g. "point-to-point"
    impl: str  # e.g. "kanal" or "channels"
    unit: str  # e.g. "msg/s" or "ms"
    samples: list[float] = field(default_factory=list)
    higher_is_better: bool = True

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")


def ratio(ours: Figure, theirs: Figure) -> float:
    """How many times better ``ours`` is than ``theirs`` (>1 means kanal is better)."""
    if not ours.samples or not theirs.samples:
        return float("nan")
    if ours.higher_is_better:
        return ours.median / theirs.median if theirs.median else float("inf")
    return theirs.median / ours.median if ours.median else float("inf")


def emit(figures: Iterable[Figure], baseline_impl: str = "kanal") -> None:
    """Print a table (figure, impl, median, samples, ratio of kanal to it) and JSON lines."""
    figures = list(figures)
    by_name: dict[tuple[str, str], dict[str, Figure]] = {}
    for fig in figures:
        by_name.setdefault((fig.suite, fig.name), {})[fig.impl] = fig
    print()
    print(f"{'figure':<44} {'impl':<26} {'median':>12} {'unit':<8} {'kanal x':>8}  samples")
    print("-" * 120)
    for (suite, name), impls in by_name.items():
        ours = impls.get(baseline_impl)
        for impl, fig in impls.items():
            r = "" if ours is None or impl == baseline_impl else f"{ratio(ours, fig):.2f}"
            samples = ", ".join(f"{s:.4g}" for s in fig.samples)
            print(
                f"{suite + ' ' + name:<44} {impl:<26} {fig.median:>12.4g} {fig.unit:<8} "
                f"{r:>8}  [{samples}]"
            )
    print()
    meta = {"python": platform.python_version(), "machine": platform.machine(), "time": time.time()}
    for fig in figures:
        record = asdict(fig) | {"median": fig.median} | meta
        print("BENCH " + json.dumps(record, sort_keys=True))
    sys.stdout.flush()


def run_client(command: list[str], cwd: Path, limit: float, what: str) -> dict[str, Any]:
    """Run a load client process; the JSON object of its first stdout line.

    ``limit`` bounds the wait for that line (seconds): a client or server that hangs fails
    the figure with the client's stderr, never the whole run.
    """
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], limit)
        line = proc.stdout.readline() if ready else b""
        if not line:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{what} failed: {proc.stderr.read().decode()[-2000:]}")
        result: dict[str, Any] = json.loads(line)
        proc.wait(timeout=30)
        return result
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


async def settle(arrived: asyncio.Event, quiet: float, limit: float) -> None:
    """Return once nothing ``arrived`` for ``quiet`` seconds (``limit`` seconds at most).

    Join notices (each newcomer's goes to everyone already in the room) must be out of the
    way before the timed part of a room benchmark; whoever receives one sets ``arrived``.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        arrived.clear()
        try:
            await asyncio.wait_for(arrived.wait(), quiet)
        except TimeoutError:
            return
