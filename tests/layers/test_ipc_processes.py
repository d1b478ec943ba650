"""The ipc:// layer across really separate processes (tests/layers/ipc_child.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.child_process import ChildProcess, child_process
from tests.layers.ipc_support import Frames

from kanal.exceptions import ChannelFull
from kanal.layers.ipc import IpcChannelLayer
from kanal.layers.ipc._wire import TAKEN

CHILD = "tests/layers/ipc_child.py"


@asynccontextmanager
async def child(role: str, directory: Path, **options: Any) -> AsyncIterator[ChildProcess]:
    async with child_process(CHILD, role, str(directory), json.dumps(options)) as process:
        yield process


async def got(process: ChildProcess, within: float = 10) -> dict[str, Any]:
    """The next message the child printed."""
    line = await process.wait_for(r"^got (.*)$", within)
    message: dict[str, Any] = json.loads(line.group(1))
    return message


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "ipc"


async def test_group_reaches_members_in_every_process(directory: Path) -> None:
    async with AsyncExitStack() as stack:
        members = [
            await stack.enter_async_context(child("member", directory, groups=["room"]))
            for _ in range(3)
        ]
        for process in members:
            await process.wait_for("^ready ")
        layer = IpcChannelLayer(directory)
        try:
            mine = await layer.new_channel()
            await layer.group_add("room", mine)
            for n in range(10):
                await layer.group_send("room", {"type": "chat", "n": n})
            for process in members:
                assert [(await got(process))["n"] for _ in range(10)] == list(range(10))
            assert [(await layer.receive(mine))["n"] for _ in range(10)] == list(range(10))
            stats = layer.stats()
            assert stats.groups["room"].delivered == 40 and stats.dropped == 0
        finally:
            await layer.close()


async def test_named_channel_delivers_each_message_to_exactly_one_process(
    directory: Path,
) -> None:
    total = 300
    async with AsyncExitStack() as stack:
        workers = [
            await stack.enter_async_context(
                child("worker", directory, channel="jobs", layer={"capacity": total})
            )
            for _ in range(3)
        ]
        for process in workers:
            await process.wait_for("^ready ")
        layer = IpcChannelLayer(directory, capacity=total)
        try:
            for n in range(total):
                await layer.send("jobs", {"type": "job", "n": n})
            seen: list[int] = []
            everything = asyncio.Event()

            async def collect(process: ChildProcess) -> None:
                while True:
                    seen.append((await got(process, within=30))["n"])
                    if len(seen) >= total:
                        everything.set()

            tasks = [asyncio.create_task(collect(process)) for process in workers]
            async with asyncio.timeout(30):
                await everything.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Everything each worker printed, to its end: a duplicate would be there.
            per_worker = []
            for process in workers:
                await process.stop()
                per_worker.append(
                    [json.loads(line[4:])["n"] for line in process.log if line.startswith("got ")]
                )
            assert sorted(n for numbers in per_worker for n in numbers) == list(range(total))
            assert sum(1 for numbers in per_worker if numbers) >= 2, per_worker
        finally:
            await layer.close()


async def test_process_specific_channels_reach_only_their_process(directory: Path) -> None:
    async with child("member", directory) as first, child("member", directory) as second:
        channel_1 = (await first.wait_for(r"^ready (\S+)")).group(1)
        channel_2 = (await second.wait_for(r"^ready (\S+)")).group(1)
        layer = IpcChannelLayer(directory)
        try:
            await layer.send(channel_1, {"type": "to", "who": 1})
            await layer.send(channel_2, {"type": "to", "who": 2})
            assert (await got(first))["who"] == 1
            assert (await got(second))["who"] == 2
            # This process cannot take another's message: receiving on its name here
            # waits for messages of this process's own, and none come.
            await layer.send(channel_1, {"type": "to", "who": "first again"})
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await layer.receive(channel_1)
            assert (await got(first))["who"] == "first again"
        finally:
            await layer.close()


async def test_capacity_and_channel_full_across_processes(directory: Path) -> None:
    async with child("idle", directory) as receiver:
        found = await receiver.wait_for(r"^ready (\S+) (\S+)")
        channel, control = found.group(1), found.group(2)
        layer = IpcChannelLayer(directory, capacity=3)
        frames = Frames(layer)
        try:
            for n in range(3):
                await layer.send(channel, {"type": "n", "n": n})
            with pytest.raises(ChannelFull) as raised:
                await layer.send(channel, {"type": "n", "n": 99})
            assert raised.value.channel == channel and raised.value.capacity == 3
            await layer.send(control, {"type": "drain"})
            assert [(await got(receiver))["n"] for _ in range(3)] == [0, 1, 2]
            # Room again once the receiver has said what it took.
            await frames.until(lambda: frames.count(TAKEN) > 0)
            await layer.send(channel, {"type": "marker"})
            assert (await got(receiver))["type"] == "marker"
            assert layer.stats().channels[channel].sent == 4
        finally:
            await layer.close()


async def test_expiry_across_processes(directory: Path) -> None:
    expiry = 0.3
    async with child("idle", directory, layer={"expiry": expiry}) as receiver:
        found = await receiver.wait_for(r"^ready (\S+) (\S+)")
        channel, control = found.group(1), found.group(2)
        layer = IpcChannelLayer(directory, expiry=expiry)
        try:
            await layer.send(channel, {"type": "stale"})
            await asyncio.sleep(expiry * 2)  # real time must pass: expiry is under test
            await layer.send(channel, {"type": "marker"})
            await layer.send(control, {"type": "drain"})
            assert (await got(receiver))["type"] == "marker"  # the stale one expired
            stats = json.loads((await receiver.wait_for(r"^stats (.*)$")).group(1))
            assert stats == {"expired": 1, "received": 2}  # the control message and marker
        finally:
            await layer.close()


async def test_group_expiry_across_processes(directory: Path) -> None:
    group_expiry = 0.5
    options = {"layer": {"group_expiry": group_expiry}, "groups": ["room"]}
    async with child("member", directory, **options) as member:
        channel = (await member.wait_for(r"^ready (\S+)")).group(1)
        layer = IpcChannelLayer(directory)
        try:
            await layer.group_send("room", {"type": "while-member"})
            assert (await got(member))["type"] == "while-member"
            await asyncio.sleep(group_expiry * 1.5)  # real time: group expiry is under test
            await layer.group_send("room", {"type": "after-expiry"})
            # Same sender, same connection: in order. The marker comes first only if the
            # group message never went.
            await layer.send(channel, {"type": "marker"})
            assert (await got(member))["type"] == "marker"
        finally:
            await layer.close()


async def test_stats_count_drops_at_the_sender(directory: Path) -> None:
    async with child("idle", directory, layer={"capacity": 1}, groups=["room"]) as receiver:
        found = await receiver.wait_for(r"^ready (\S+) (\S+)")
        channel = found.group(1)
        layer = IpcChannelLayer(directory, capacity=10)  # the receiver's capacity counts
        frames = Frames(layer)
        try:
            await layer.group_send("room", {"type": "fits"})
            await layer.group_send("room", {"type": "dropped"})
            await layer.send(channel, {"type": "dropped too"})
            await frames.until(lambda: layer.stats().dropped == 2)
            stats = layer.stats()
            assert stats.groups["room"].dropped == 1 and stats.groups["room"].delivered == 1
            assert stats.channels[channel].dropped == 2
        finally:
            await layer.close()


async def test_group_members_of_another_instance_get_their_own_copies(directory: Path) -> None:
    """A group message for several channels of one process is decoded once there; each
    receiver still gets a message of its own, at every depth."""
    receiving, sending = IpcChannelLayer(directory), IpcChannelLayer(directory)
    try:
        members = [await receiving.new_channel() for _ in range(3)]
        for channel in members:
            await receiving.group_add("room", channel)
        sent = {"type": "chat", "user": {"id": 7, "tags": ["a"]}, "items": [[1], {"n": 2}]}
        await sending.group_send("room", sent)
        first = await receiving.receive(members[0])
        first["user"]["tags"].append("changed")
        first["items"][0].append("changed")
        first.pop("type")
        assert await receiving.receive(members[1]) == sent
        assert receiving.receive_nowait(members[2]) == sent
    finally:
        await receiving.close()
        await sending.close()
