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
        # Unmasked server text frames under 126 bytes: two header bytes, then the text
        # (a catch-up comes as one write of several).
        texts, data = [], b"".join(self.frames)
        while data:
            size = data[1]
            texts.append(data[2 : 2 + size].decode())
            data = data[2 + size :]
        return texts


class Transport:
    def __init__(self, kept: list[Message], gate: asyncio.Event) -> None:
        self.kept = kept
        self.gate = gate
        self.fail: Exception | None = None
        self.reading = asyncio.Event()  # a catch-up is waiting on the history
        self.reads = 0

    async def join(self, group: str) -> None:
        pass

    async def leave(self, group: str) -> None:
        pass

    async def close(self) -> None:
        pass

    async def history(self, group: str, since: str) -> Sequence[Message]:
        self.reads += 1
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
    # Another connection from the same position shares the read in progress.
    other = Connection()
    sharing = asyncio.create_task(groups.subscribe(other, "g", "e:2"))
    await asyncio.sleep(0)
    gate.set()
    await subscribing
    await sharing
    assert connection.texts() == ["m3", "m4", "m5", "m6", "m7"]
    # It registered after broadcasts 6 and 7 arrived, and after the read began: it may not
    # share that read (6 and 7 would fall between), so it got a read of its own.
    assert other.texts() == ["m3", "m4", "m5", "m6"]
    assert transport.reads == 2
    # The first catch-up ended with a newer broadcast than it wrote: nothing is left of it.
    assert connection not in groups._recovering["g"]
    groups.deliver([("g", broadcast(8))])
    assert connection.texts()[-1] == "m8" and other.texts()[-1] == "m8"
    assert groups._recovering == {} and groups._reads == {}


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


async def test_connections_from_one_position_share_one_read(
    hub: tuple[DirectGroups, Transport, asyncio.Event],
) -> None:
    groups, transport, gate = hub
    connections = [Connection() for _ in range(50)]
    # All registered before any read began (as a restarted server's clients are).
    waiting = [asyncio.create_task(groups.subscribe(c, "g", "e:1")) for c in connections]
    await transport.reading.wait()
    groups.deliver([("g", broadcast(6))])
    gate.set()
    await asyncio.gather(*waiting)
    assert transport.reads == 1
    for connection in connections:
        assert connection.texts() == ["m2", "m3", "m4", "m5", "m6"]
