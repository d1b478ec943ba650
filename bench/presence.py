"""Presence on Redis: what a presence update costs next to a plain ``group_send``.

One ``redis-server`` (started by the bench on a free port), one process, kanal's
``RedisChannelLayer``. In the table the ``kanal`` row is the presence operation and the
``group_send`` row the plain ``group_send`` to a group of one member (a named channel,
left undrained, so that only the script and the round trip count) measured in the same
repeat, so the ratio column says how
presence compares with the cheapest group operation (1 = as fast):

* update, awaited one by one: ``presence_join`` of one connection whose metadata changes
  each time (one script, one round trip each), against ``group_send`` awaited one by one;
* updates, 1,000 at once: 1,000 connections joining concurrently (pipelined by the layer),
  against 1,000 concurrent ``group_send``;
* heartbeat of 10,000 presences in one group: ms per heartbeat (10 scripts of 1,000);
* a room of 2,000 filling up: diff messages sent to the group (a watcher member counts
  them), against the 2,000 notices one per join would be.

Run ``python -m bench presence [--repeats N]`` (or ``python -m bench.presence``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench._common import Figure, emit
from kanal.layers.redis import RedisChannelLayer
from kanal.testing import RedisServer

__all__ = ["run"]

SUITE = "presence.redis"
SEQUENTIAL = 2_000
CONCURRENT = 1_000
HEARTBEAT_PRESENCES = 10_000
ROOM = 2_000


def _layer(url: str) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[url], prefix="bench-presence", capacity=100_000)


async def _group_send(url: str, concurrent: bool) -> float:
    layer = _layer(url)
    try:
        await layer.flush()
        # A named channel, left undrained: the group_send's whole cost is its script in
        # Redis and the round trip, as a presence update's is.
        await layer.group_add("plain", "sink")
        count = CONCURRENT if concurrent else SEQUENTIAL
        message = {"type": "room.update", "user": "u", "meta": {"name": "Alice", "n": 0}}
        start = time.perf_counter()
        if concurrent:
            await asyncio.gather(*(layer.group_send("plain", message) for _ in range(count)))
        else:
            for _ in range(count):
                await layer.group_send("plain", message)
        return count / (time.perf_counter() - start)
    finally:
        await layer.flush()
        await layer.close()


async def _presence_updates(url: str, concurrent: bool) -> float:
    layer = _layer(url)
    try:
        await layer.flush()
        count = CONCURRENT if concurrent else SEQUENTIAL
        start = time.perf_counter()
        if concurrent:
            await asyncio.gather(
                *(
                    layer.presence_join(
                        "room", f"conn.b!{i}", f"user{i}", {"name": "A"}, notify=None
                    )
                    for i in range(count)
                )
            )
        else:
            for i in range(count):
                await layer.presence_join(
                    "room", "conn.b!1", "user", {"name": "Alice", "n": i}, notify=None
                )
        return count / (time.perf_counter() - start)
    finally:
        await layer.flush()
        await layer.close()


async def _heartbeat(url: str) -> float:
    layer = _layer(url)
    try:
        await layer.flush()
        tracker = layer.presence_tracker
        tracker.heartbeats = False  # only the one measured below
        for start in range(0, HEARTBEAT_PRESENCES, 1_000):
            await asyncio.gather(
                *(
                    layer.presence_join("big", f"conn.b!{i}", f"user{i}", notify=None)
                    for i in range(start, start + 1_000)
                )
            )
        began = time.perf_counter()
        await tracker.heartbeat()
        return (time.perf_counter() - began) * 1000
    finally:
        await layer.flush()
        await layer.close()


async def _room_diffs(url: str) -> float:
    layer = _layer(url)
    try:
        await layer.flush()
        watcher = await layer.new_channel()
        await layer.group_add("filling", watcher)
        joined = 0
        diffs = 0
        await asyncio.gather(
            *(layer.presence_join("filling", f"conn.b!{i}", f"user{i}") for i in range(ROOM))
        )
        while joined < ROOM:
            message: dict[str, Any] = await asyncio.wait_for(layer.receive(watcher), 30)
            diffs += 1
            joined += sum(len(refs) for refs in message["joins"].values())
        return float(diffs)
    finally:
        await layer.flush()
        await layer.close()


async def _measure(repeats: int) -> list[Figure]:
    figures = {
        "sequential": (
            Figure(SUITE, "update, awaited one by one", "kanal", "ops/s"),
            Figure(SUITE, "update, awaited one by one", "group_send", "ops/s"),
        ),
        "concurrent": (
            Figure(SUITE, f"updates, {CONCURRENT:,} at once", "kanal", "ops/s"),
            Figure(SUITE, f"updates, {CONCURRENT:,} at once", "group_send", "ops/s"),
        ),
    }
    heartbeat = Figure(
        SUITE, f"heartbeat of {HEARTBEAT_PRESENCES:,}", "kanal", "ms", higher_is_better=False
    )
    diffs = Figure(
        SUITE, f"room of {ROOM:,} filling: messages", "kanal", "msgs", higher_is_better=False
    )
    naive = Figure(
        SUITE, f"room of {ROOM:,} filling: messages", "one per join", "msgs", higher_is_better=False
    )
    with RedisServer() as server:
        for _ in range(repeats):
            for key, (ours, theirs) in figures.items():
                concurrent = key == "concurrent"
                ours.samples.append(await _presence_updates(server.url, concurrent))
                theirs.samples.append(await _group_send(server.url, concurrent))
            heartbeat.samples.append(await _heartbeat(server.url))
            diffs.samples.append(await _room_diffs(server.url))
            naive.samples.append(float(ROOM))
    return [*(fig for pair in figures.values() for fig in pair), heartbeat, diffs, naive]


def run(repeats: int) -> list[Figure]:
    """The suite's figures (see the module)."""
    return asyncio.run(_measure(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.presence", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    emit(run(parser.parse_args().repeats))


if __name__ == "__main__":
    main()
