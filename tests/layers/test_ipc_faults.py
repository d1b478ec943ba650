"""The ipc:// layer when processes are killed (``kill -9``), restarted, or kept apart."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import stat
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.child_process import ChildProcess, child_process

from kanal.exceptions import ConfigError
from kanal.layers.ipc import IpcChannelLayer

CHILD = "tests/layers/ipc_child.py"


@asynccontextmanager
async def child(role: str, directory: Path, **options: Any) -> AsyncIterator[ChildProcess]:
    async with child_process(CHILD, role, str(directory), json.dumps(options)) as process:
        yield process


def token_of(channel: str) -> str:
    return channel.split("!")[0].rsplit(".", 1)[1]


def rows(directory: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """What the layer's database holds, read as any other process would."""
    database = sqlite3.connect(directory / "state.db", timeout=10)
    try:
        return database.execute(query, args).fetchall()
    finally:
        database.close()


def process_files(directory: Path) -> set[str]:
    """The names of the processes' lock files in ``directory``."""
    return {path.name for path in directory.glob("*.lock") if path.name != "registry.lock"}


def modes(directory: Path) -> dict[str, int]:
    """The permission bits of ``directory`` (as ``"."``) and of each of its files."""
    found = {".": stat.S_IMODE(directory.stat().st_mode)}
    for path in directory.iterdir():
        found[path.name] = stat.S_IMODE(path.stat().st_mode)
    return found


def make_directory(directory: Path, mode: int, uid: int = -1) -> None:
    directory.mkdir()
    directory.chmod(mode)
    if uid >= 0:
        os.chown(directory, uid, -1)


async def kill(process: ChildProcess) -> None:
    """``kill -9``, and wait until the kernel has reaped it (its locks are free then)."""
    process.process.send_signal(signal.SIGKILL)
    await process.stop(signal.SIGKILL)


class Probes:
    """Counts the looks ``layer`` takes for dead processes (every second)."""

    def __init__(self, layer: IpcChannelLayer) -> None:
        self.count = 0
        self._looked = asyncio.Event()
        original = layer._look_for_the_dead

        def look() -> None:
            original()
            self.count += 1
            self._looked.set()

        layer._look_for_the_dead = look  # type: ignore[method-assign]

    async def next(self, within: float = 10) -> None:
        """Wait for one complete look that starts from now."""
        target = self.count + 2  # the one running may have listed the directory already
        async with asyncio.timeout(within):
            while self.count < target:
                self._looked.clear()
                await self._looked.wait()


@pytest.fixture
def directory(short_tmp: Path) -> Path:
    return short_tmp / "ipc"


async def test_a_killed_member_is_cleaned_up_and_the_others_go_on(directory: Path) -> None:
    layer = IpcChannelLayer(directory)
    try:
        mine = await layer.new_channel()
        await layer.group_add("room", mine)
        async with (
            child("member", directory, groups=["room"]) as doomed,
            child("member", directory, groups=["room"]) as survivor,
        ):
            dead_channel = (await doomed.wait_for(r"^ready (\S+)")).group(1)
            await survivor.wait_for("^ready ")
            await layer.send(dead_channel, {"type": "before"})
            await layer.group_send("room", {"type": "n", "n": 1})
            await doomed.wait_for('"n": 1')
            await kill(doomed)
            await layer.group_send("room", {"type": "n", "n": 2})  # never raises
            await survivor.wait_for('"n": 1')
            await survivor.wait_for('"n": 2')
            assert (await layer.receive(mine))["n"] == 1
            assert (await layer.receive(mine))["n"] == 2
            # Sends to the dead process's channel are counted, not raised, not kept.
            await layer.send(dead_channel, {"type": "after"})
            token = token_of(dead_channel)
            assert rows(directory, "SELECT * FROM members WHERE owner = ?", token) == []
            assert f"{token}.lock" not in process_files(directory)
            assert f"{token}.sock" not in modes(directory)
            assert layer.stats().channels[dead_channel].unavailable >= 1
    finally:
        await layer.close()


async def test_the_killed_home_of_a_named_channel_is_replaced(directory: Path) -> None:
    async with child("worker", directory, channel="jobs") as home:
        home_token = (await home.wait_for(r"^ready (\S+)")).group(1)
        layer = IpcChannelLayer(directory)
        try:
            await layer.send("jobs", {"type": "job", "n": 1})
            await home.wait_for('"n": 1')
            waiting = asyncio.ensure_future(layer.receive("jobs"))  # claims at the home
            await asyncio.sleep(0)
            await kill(home)
            await layer.send("jobs", {"type": "job", "n": 2})  # to the new home: here
            async with asyncio.timeout(10):
                assert (await waiting)["n"] == 2
            assert rows(directory, "SELECT owner FROM homes WHERE channel = 'jobs'") == [
                (layer.token,)
            ]
            assert home_token != layer.token
        finally:
            await layer.close()


async def test_a_process_killed_while_holding_every_lock_stalls_nobody(directory: Path) -> None:
    layer = IpcChannelLayer(directory)
    try:
        mine = await layer.new_channel()
        async with child("locker", directory) as locker:
            locked_channel = (await locker.wait_for(r"^holding (\S+)")).group(1)
            await kill(locker)
        async with asyncio.timeout(10):
            # The database's write lock and the join lock were released by the kernel.
            await layer.group_add("room", mine)
            other = IpcChannelLayer(directory)
            try:
                theirs = await other.new_channel()
                await other.group_add("room", theirs)
                await layer.group_send("room", {"type": "hello"})
                assert (await other.receive(theirs))["type"] == "hello"
                assert (await layer.receive(mine))["type"] == "hello"
            finally:
                await other.close()
        # Its uncommitted change never happened; its own membership is gone.
        members = {channel for (channel,) in rows(directory, "SELECT channel FROM members")}
        assert mine in members and locked_channel not in members
    finally:
        await layer.close()


async def test_killed_in_the_middle_of_sends(directory: Path) -> None:
    """Busy senders killed at random moments leave half-written frames; nobody minds."""
    layer = IpcChannelLayer(directory, capacity=100_000)
    try:
        mine = await layer.new_channel()
        await layer.group_add("fuzz", mine)
        for _ in range(3):
            async with child("busy", directory, groups=["fuzz"], rate=20) as busy:
                await busy.wait_for("^alive ")
                await layer.receive(mine)
                await kill(busy)
        layer.stats()
        await layer.send(mine, {"type": "still fine"})
        while (message := await layer.receive(mine))["type"] != "still fine":
            assert message["type"] == "busy"
    finally:
        await layer.close()


@pytest.mark.slow
async def test_fuzz_kill_random_processes_of_a_busy_group(directory: Path) -> None:
    """Four busy processes (each in the group, each sending to it and to a named channel);
    one at a time, a random one is killed at a random moment and replaced. The survivors
    keep working, and each dead one's memberships, homes and files go within a second or
    two (well within the expiry)."""
    rng = random.Random(1414)
    layer = IpcChannelLayer(directory, capacity=100_000)
    probes = Probes(layer)
    options: dict[str, Any] = {"groups": ["fuzz"], "rate": 5}
    try:
        watcher = await layer.new_channel()
        await layer.group_add("fuzz", watcher)
        async with AsyncExitStack() as stack:

            async def start() -> tuple[ChildProcess, str]:
                process = await stack.enter_async_context(child("busy", directory, **options))
                channel = (await process.wait_for(r"^ready (\S+)")).group(1)
                return process, token_of(channel)

            processes = [await start() for _ in range(4)]
            jobs = await stack.enter_async_context(child("worker", directory, channel="fuzz-jobs"))
            await jobs.wait_for("^ready ")
            dead: list[str] = []
            for _ in range(12):
                index = rng.randrange(len(processes))
                victim, token = processes[index]
                await victim.wait_for("^alive ")
                # A random moment of its loop: it sends in bursts.
                await asyncio.sleep(rng.uniform(0, 0.02))
                await kill(victim)
                dead.append(token)
                processes[index] = await start()
                for survivor, _ in processes:
                    await survivor.wait_for("^alive ", within=20)
                await jobs.wait_for("^got ", within=20)
                # This process too: it still receives the group's traffic.
                await layer.receive(watcher)
            await probes.next()
            live = {token for _, token in processes}
            owners = {owner for (owner,) in rows(directory, "SELECT owner FROM members")}
            homes = {owner for (owner,) in rows(directory, "SELECT owner FROM homes")}
            assert not owners & set(dead) and not homes & set(dead)
            assert live <= owners
            left = set(modes(directory))
            for token in dead:
                assert f"{token}.lock" not in left and f"{token}.sock" not in left
    finally:
        await layer.close()


async def test_a_restart_starts_clean(directory: Path) -> None:
    async with child("member", directory, groups=["room"]) as member:
        await member.wait_for("^ready ")
        async with child("worker", directory, channel="jobs") as worker:
            await worker.wait_for("^ready ")
            await kill(worker)
        await kill(member)
    # Everyone is dead: what they left is stale. The next process to join wipes it.
    assert rows(directory, "SELECT COUNT(*) FROM members") == [(1,)]
    layer = IpcChannelLayer(directory)
    try:
        await layer.new_channel()
        assert rows(directory, "SELECT COUNT(*) FROM members") == [(0,)]
        assert rows(directory, "SELECT COUNT(*) FROM homes") == [(0,)]
        assert process_files(directory) == {f"{layer.token}.lock"}
    finally:
        await layer.close()
    assert process_files(directory) == set()  # a clean close leaves nothing either


async def test_files_are_private_to_their_owner(directory: Path) -> None:
    layer = IpcChannelLayer(directory)
    try:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        found = modes(directory)
        assert found.pop(".") == 0o700
        mine = {f"{layer.token}.sock", f"{layer.token}.lock"}
        assert {"state.db", "state.db-wal", "state.db-shm", "registry.lock", *mine} <= set(found)
        assert found == dict.fromkeys(found, 0o600)
    finally:
        await layer.close()


async def test_a_wider_directory_is_narrowed(directory: Path) -> None:
    make_directory(directory, 0o777)
    layer = IpcChannelLayer(directory)
    try:
        await layer.new_channel()
        assert modes(directory)["."] == 0o700
    finally:
        await layer.close()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory away needs root")
async def test_a_directory_of_another_user_is_refused(directory: Path) -> None:
    make_directory(directory, 0o700, uid=65534)
    layer = IpcChannelLayer(directory)
    with pytest.raises(ConfigError, match="belongs to uid 65534"):
        await layer.new_channel()
    await layer.close()


def test_too_long_a_directory_is_refused() -> None:
    with pytest.raises(ConfigError, match="too long for a Unix socket"):
        IpcChannelLayer("/" + "d" * 120)


async def test_two_applications_on_one_host_are_apart(short_tmp: Path) -> None:
    first, second = IpcChannelLayer(short_tmp / "one"), IpcChannelLayer(short_tmp / "two")
    try:
        mine, theirs = await first.new_channel(), await second.new_channel()
        await first.group_add("room", mine)
        await second.group_add("room", theirs)
        await second.send("jobs", {"type": "for two"})
        await first.send("jobs", {"type": "for one"})
        await first.group_send("room", {"type": "one's room"})
        assert (await first.receive(mine))["type"] == "one's room"
        assert (await first.receive("jobs"))["type"] == "for one"
        assert (await second.receive("jobs"))["type"] == "for two"
        await second.group_send("room", {"type": "two's room"})
        assert (await second.receive(theirs))["type"] == "two's room"
        assert first.receive_nowait(mine) is None
    finally:
        await first.close()
        await second.close()


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm on this host")
async def test_a_directory_on_tmpfs() -> None:
    """The layer never uses /dev/shm itself (its shared memory is the database's -shm file,
    in its own directory); a directory on a tmpfs such as /dev/shm works like any other."""
    base = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="k"))
    try:
        layer = IpcChannelLayer(base / "ipc")
        other = IpcChannelLayer(base / "ipc")
        try:
            mine = await layer.new_channel()
            await other.group_add("room", mine)
            await other.group_send("room", {"type": "on tmpfs"})
            assert (await layer.receive(mine))["type"] == "on tmpfs"
        finally:
            await layer.close()
            await other.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_a_stopped_process_costs_its_senders_bounded_memory(directory: Path) -> None:
    """A process that stops reading (SIGSTOP) fills its connection; past ``max_backlog``
    what is sent to it is counted as dropped, not held; once it reads again it goes on."""
    layer = IpcChannelLayer(directory)
    layer.max_backlog = 1_000_000
    try:
        async with child("member", directory, groups=["room"]) as member:
            channel = (await member.wait_for(r"^ready (\S+)")).group(1)
            await layer.group_send("room", {"type": "first"})
            await member.wait_for('"first"')
            member.process.send_signal(signal.SIGSTOP)
            try:
                padding = "x" * 10_000
                for _ in range(2_000):  # 20 MB, far past the backlog allowed
                    await layer.group_send("room", {"type": "flood", "padding": padding})
                    if layer.stats().unavailable:
                        break
                stats = layer.stats()
                assert stats.unavailable >= 1 and stats.groups["room"].unavailable >= 1
                assert stats.channels[channel].unavailable >= 1
            finally:
                member.process.send_signal(signal.SIGCONT)
            # It reads again (a message on a connection of its own gets through at once).
            other = IpcChannelLayer(directory)
            try:
                await other.send(channel, {"type": "marker"})
                await member.wait_for('"marker"', within=30)
            finally:
                await other.close()
    finally:
        await layer.close()
