"""What ``kanal inspect`` draws: a table of the processes, the largest groups and the
channels where messages wait, from the summaries an :class:`Inspector` sampled.

Built with ``rich`` (the ``inspect`` extra), imported by the command only when it draws;
``--json`` needs nothing more than the standard library.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kanal.inspect._gather import nothing_attached

__all__ = ["LISTED", "combined_groups", "render", "render_nothing"]

#: Rows of the groups' and the channels' tables.
LISTED = 10


def _uptime(summary: dict[str, Any]) -> str:
    seconds = int(max(0.0, summary["taken"] - summary["started"]))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def combined_groups(summaries: Sequence[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """Groups by members over every process (layer memberships and direct subscribers),
    largest first: (group, members, processes with members)."""
    members: dict[str, int] = {}
    processes: dict[str, int] = {}
    for summary in summaries:
        counts: dict[str, int] = {}
        for source in ("groups", "direct"):
            for group, count in (summary.get(source) or {}).items():
                counts[group] = counts.get(group, 0) + count
        for group, count in counts.items():
            members[group] = members.get(group, 0) + count
            processes[group] = processes.get(group, 0) + 1
    ranked = sorted(members.items(), key=lambda item: (-item[1], item[0]))
    return [(group, count, processes[group]) for group, count in ranked]


def _pair(summary: dict[str, Any], first: str, second: str) -> str:
    rates = summary.get("rates") or {}
    if first not in rates:
        return "-"
    return f"{rates[first]:,.0f} / {rates[second]:,.0f}"


def _processes(summaries: Sequence[dict[str, Any]]) -> Table:
    hosts = {s["host"] for s in summaries}
    table = Table(title="processes", title_justify="left")
    table.add_column("process")
    table.add_column("pid" if len(hosts) == 1 else "host:pid")
    for column in ("up", "http / ws", "ws in / out /s", "layer out / in /s", "waiting (max)"):
        table.add_column(column, justify="right")
    for column in ("dropped", "cpu", "memory"):
        table.add_column(column, justify="right")
    for s in summaries:
        connections = s.get("connections") or {}
        rates = s.get("rates") or {}
        cpu = f"{100 * rates['cpu_seconds']:.0f}%" if "cpu_seconds" in rates else "-"
        dropped = Text(f"{s['dropped']:,}", style="bold red" if s["dropped"] else "")
        table.add_row(
            f"{s['role']} {s['process']}",
            str(s["pid"]) if len(hosts) == 1 else f"{s['host']}:{s['pid']}",
            _uptime(s),
            f"{connections.get('http', 0):,} / {connections.get('websocket', 0):,}",
            _pair(s, "ws_messages_received", "ws_messages_sent"),
            _pair(s, "layer_sent", "layer_received"),
            f"{s['pending']:,} ({s['largest_queue']:,})",
            dropped,
            cpu,
            f"{s['resident_bytes'] / 2**20:,.0f} MiB",
        )
    return table


def _groups(summaries: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="largest groups", title_justify="left")
    table.add_column("group")
    table.add_column("members", justify="right")
    table.add_column("processes", justify="right")
    for group, members, processes in combined_groups(summaries)[:LISTED]:
        table.add_row(group, f"{members:,}", f"{processes:,}")
    return table


def _channels(summaries: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="channels with messages waiting", title_justify="left")
    table.add_column("channel")
    table.add_column("waiting", justify="right")
    table.add_column("process")
    waiting = [
        (count, name, f"{s['role']} {s['process']} ({s['pid']})")
        for s in summaries
        for name, count in (s.get("busiest_channels") or {}).items()
    ]
    for count, name, owner in sorted(waiting, reverse=True)[:LISTED]:
        table.add_row(name, f"{count:,}", owner)
    return table


def render(url: str, summaries: Sequence[dict[str, Any]]) -> RenderableType:
    """The whole view of one sample of the processes attached to ``url``."""
    if not summaries:
        return render_nothing(url)
    drops: dict[str, int] = {}
    for s in summaries:
        for reason, count in (s.get("drops") or {}).items():
            drops[reason] = drops.get(reason, 0) + count
    lost = ", ".join(f"{reason} {count:,}" for reason, count in sorted(drops.items()) if count)
    heading = Text.assemble(
        (f"kanal inspect {url}", "bold"),
        f"  {len(summaries)} process{'es' if len(summaries) != 1 else ''}",
        f" on {', '.join(sorted({s['host'] for s in summaries}))}",
        f"  {time.strftime('%H:%M:%S')}",
        ("  dropped: " + lost, "bold red") if lost else "  nothing dropped",
    )
    parts: list[RenderableType] = [heading, _processes(summaries)]
    if combined_groups(summaries):
        parts.append(_groups(summaries))
    if any(s.get("busiest_channels") for s in summaries):
        parts.append(_channels(summaries))
    return Group(*parts)


def render_nothing(url: str) -> Text:
    """What the view says when no process answered."""
    return Text(nothing_attached(url), style="bold yellow")
