"""Direct delivery's catch-up (a subscribe with since), on the hub itself: what is held
back, what is skipped as written already, and what is left behind (nothing)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from kanal.exceptions import HistoryGap
from kanal.server._direct import DirectGroups
from kanal.server._state import ServerStats
from kanal.typing import Message


class Connection:
    def __init__(self) -> None:
        self.direct_groups: set[str] | None = None
        self.frames: list[bytes] = []

    def write_direct(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close_direct(self, code: int, reason: str) -> None:
        raise AssertionError("nothing closes here")

    def texts(self) -> list[str]:
        # An unmasked server text frame under 126 bytes: two header bytes, then the text.
        return [frame[2:].decode() for frame in self.frames]


class Transport:
    def __init__(self, kept: list[Message], gate: asyncio.Event) -> None:
        self.kept = kept
        self.gate = gate
        self.fail: Exception | None = None
        self.reading = asyncio.Event()  # a catch-up is waiting on the history

    async def join(self, group: str) -> None:
        pass

    async def leave(self, group: str) -> None:
        pass

    async def close(self) -> None:
        pass

    async def history(self, group: str, since: str) -> Sequence[Message]:
        self.reading.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        offset = int(since.rpartition(":")[2])
        return [m for m in self.kept if int(m["position"].rpartition(":")[2]) > offset]


def broadcast(offset: int) -> Message:
    return {"type": "kanal.direct", "group": "g", "text": f"m{offset}", "position": f"e:{offset}"}


@pytest.fixture
async def hub() -> tuple[DirectGroups, Transport, asyncio.Event]:
    gate = asyncio.Event()
    transport = Transport([broadcast(n) for n in range(1, 6)], gate)
    groups = DirectGroups(lambda deliver: transport, ServerStats(), asyncio.get_running_loop())
    return groups, transport, gate


async def test_live_broadcasts_wait_for_the_catch_up_and_duplicates_are_skipped(
    hub: tuple[DirectGroups, Transport, asyncio.Event],
) -> None:
    groups, transport, gate = hub
    connection = Connection()
    subscribing = asyncio.create_task(groups.subscribe(connection, "g", "e:2"))
    await transport.reading.wait()
    groups.deliver([("g", broadcast(5))])  # kept already: the catch-up writes it
    transport.kept.append(broadcast(6))
    groups.deliver([("g", broadcast(6)), ("g", broadcast(7))])
    assert connection.frames == []  # held back until the catch-up is written
    gate.set()
    await subscribing
    assert connection.texts() == ["m3", "m4", "m5", "m6", "m7"]
    # The catch-up ended with a newer broadcast than it wrote: nothing is left of it.
    assert groups._recovering == {}
    groups.deliver([("g", broadcast(8))])
    assert connection.texts()[-1] == "m8"


async def test_a_late_live_copy_after_the_catch_up_is_skipped_then_forgotten(
    hub: tuple[DirectGroups, Transport, asyncio.Event],
) -> None:
    groups, _, gate = hub
    gate.set()
    connection = Connection()
    await groups.subscribe(connection, "g", "e:3")
    assert connection.texts() == ["m4", "m5"]
    groups.deliver([("g", broadcast(5))])  # the live copy of one the catch-up wrote
    assert connection.texts() == ["m4", "m5"]
    assert "g" in groups._recovering  # still watching for late copies
    groups.forget(connection)  # the connection ends before a newer one came
    assert groups._recovering == {}


async def test_a_failed_catch_up_writes_what_was_held_and_raises(
    hub: tuple[DirectGroups, Transport, asyncio.Event],
) -> None:
    groups, transport, gate = hub
    transport.fail = HistoryGap("gone", group="g", since="e:0", position="e:5")
    connection = Connection()
    subscribing = asyncio.create_task(groups.subscribe(connection, "g", "e:0"))
    await transport.reading.wait()
    groups.deliver([("g", broadcast(6))])
    gate.set()
    with pytest.raises(HistoryGap):
        await subscribing
    assert connection.texts() == ["m6"]  # still subscribed, live from here
    assert groups._recovering == {}
    groups.deliver([("g", broadcast(7))])
    assert connection.texts() == ["m6", "m7"]


async def test_subscribers_without_since_are_not_held_back(
    hub: tuple[DirectGroups, Transport, asyncio.Event],
) -> None:
    groups, transport, gate = hub
    plain, recovering = Connection(), Connection()
    await groups.subscribe(plain, "g")
    subscribing = asyncio.create_task(groups.subscribe(recovering, "g", "e:4"))
    await transport.reading.wait()
    groups.deliver([("g", broadcast(6))])
    assert plain.texts() == ["m6"] and recovering.frames == []
    gate.set()
    await subscribing
    assert recovering.texts() == ["m5", "m6"]
