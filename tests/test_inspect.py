"""``kanal inspect``: real processes answer through their layer (ipc://, Redis) or a server
on memory:// through its metrics listener; the view draws what they said."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from tests.child_process import ROOT, child_process
from websockets.asyncio.client import connect

from kanal.inspect import Inspector, ProcessSnapshot, Responder, take_snapshot
from kanal.inspect._view import combined_groups, render
from kanal.layers import InMemoryChannelLayer
from kanal.layers.ipc import IpcChannelLayer
from kanal.layers.redis import RedisChannelLayer
from kanal.testing import RedisServer, free_port

WORKER_APPS = Path(__file__).resolve().parent / "worker"


async def inspect(*args: str) -> tuple[int, str, str]:
    """``kanal inspect ARGS...`` run to its end: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kanal.cli", "inspect", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def inspect_json(url: str) -> list[dict[str, Any]]:
    code, out, err = await inspect(url, "--once", "--json", "--interval", "0.2")
    assert code == 0, err
    processes: list[dict[str, Any]] = json.loads(out)["processes"]
    return processes


async def test_every_process_on_an_ipc_layer_answers_and_a_killed_one_drops_out(
    tmp_path: Path,
) -> None:
    url = f"ipc://{tmp_path / 'layer'}"
    port = free_port()
    serve = child_process(
        "-m", "kanal.cli", "serve", "worker_apps:tasks", "--workers", "2", "--port", str(port),
        env={"KANAL_LAYER": url}, path=(WORKER_APPS,),
    )  # fmt: skip
    worker = child_process(
        "-m", "kanal.cli", "worker", "worker_apps:tasks", "jobs", "--layer", url,
        path=(WORKER_APPS,),
    )  # fmt: skip
    quiet = child_process(
        "-m", "kanal.cli", "worker", "worker_apps:tasks", "jobs", "--layer", url,
        "--no-inspect", path=(WORKER_APPS,),
    )  # fmt: skip
    async with serve as server, worker as answering, quiet as silent:
        await server.wait_for("workers ready on")
        await answering.wait_for("worker listening on")
        await silent.wait_for("worker listening on")
        found = await inspect_json(url)
        by_pid = {p["pid"]: p for p in found}
        assert answering.pid in by_pid and silent.pid not in by_pid
        servers = [p for p in found if p["role"] == "server"]
        assert sorted(p["process"] for p in servers) == ["0", "1"]
        assert by_pid[answering.pid]["role"] == "worker"
        assert by_pid[answering.pid]["worker"]["failed"] == 0
        assert by_pid[answering.pid]["rates"]["layer_sent"] == 0  # inspecting is not traffic
        assert all("rates" in p and "layer_sent" in p["rates"] for p in found)
        assert await answering.stop(signal.SIGKILL) == -signal.SIGKILL
        after = await inspect_json(url)
        assert sorted(p["pid"] for p in after) == sorted(p["pid"] for p in servers)
        assert await silent.stop() == 0
        assert await server.stop() == 0  # its worker processes with it


async def test_a_process_reports_its_groups_waiting_messages_and_rates(tmp_path: Path) -> None:
    url = f"ipc://{tmp_path / 'layer'}"
    layer = IpcChannelLayer.from_url(url)
    responder = Responder(layer, lambda: take_snapshot(role="server", layers={url: layer}))
    inspector = Inspector(url, wait=0.3)
    try:
        responder.start()
        await responder.joined.wait()
        members = [await layer.new_channel() for _ in range(3)]
        for channel in members:
            await layer.group_add("room.lobby", channel)
        await layer.group_add("room.quiet", members[0])
        for n in range(5):
            await layer.send(members[1], {"type": "chat", "n": n})
        first = await inspector.sample()
        for n in range(20):
            await layer.group_send("room.lobby", {"type": "chat", "n": n})
        for n in range(10):
            await layer.send(members[2], {"type": "chat", "n": n})
        [summary] = await inspector.sample()
    finally:
        await inspector.close()
        await responder.close()
        await layer.close()
    assert len(first) == 1 and first[0]["rates"] == {}  # no rate from one sample
    assert summary["groups"] == {"room.lobby": 3, "room.quiet": 1}  # kanal.inspect left out
    assert summary["busiest_channels"][members[1]] == 25
    assert summary["busiest_channels"][members[2]] == 30
    assert summary["pending"] == 20 + 25 + 30  # the responder's channel is left out
    # Its own requests and answers are not counted: only the sends, and the group sends'
    # deliveries (20 to 3 members).
    assert first[0]["layer_sent"] == 5 and summary["layer_sent"] == 5 + 60 + 10
    assert summary["layer_received"] == 0 and summary["rates"]["layer_sent"] > 0
    assert combined_groups([summary, summary]) == [("room.lobby", 6, 2), ("room.quiet", 2, 2)]
    console = Console(record=True, width=200)
    console.print(render(url, [summary]))
    text = console.export_text()
    assert "server 0" in text and "room.lobby" in text and members[1] in text
    assert "nothing dropped" in text


@pytest.mark.redis
async def test_a_worker_on_redis_answers(redis_server: RedisServer) -> None:
    url = redis_server.url
    async with child_process(
        "-m", "kanal.cli", "worker", "worker_apps:tasks", "jobs", "--layer", url,
        path=(WORKER_APPS,),
    ) as worker:  # fmt: skip
        await worker.wait_for("worker listening on")
        [found] = await inspect_json(url)
        assert found["pid"] == worker.pid and found["layers"] == ["redis"]
        code, out, _ = await inspect(url, "--once", "--interval", "0.2")
        assert code == 0 and "worker 0" in out and str(worker.pid) in out


async def test_a_server_on_memory_answers_on_its_metrics_listener() -> None:
    port, metrics = free_port(), free_port()
    async with child_process(
        "-m", "kanal.cli", "serve", "tests.server.apps:hello", "--port", str(port),
        "--metrics", str(metrics),
    ) as server:  # fmt: skip
        await server.wait_for("kanal metrics on")
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            [found] = await inspect_json(f"http://127.0.0.1:{metrics}")
        assert found["pid"] == server.pid and found["role"] == "server"
        assert found["connections"]["websocket"] == 1
        assert found["ws_messages_received"] == 1


async def test_nothing_attached_is_said_plainly(tmp_path: Path) -> None:
    url = f"ipc://{tmp_path / 'nobody'}"
    code, out, _ = await inspect(url, "--once", "--interval", "0.1", "--wait", "0.1")
    assert code == 1 and "no kanal process is attached to" in " ".join(out.split())
    code, out, err = await inspect(url, "--once", "--json", "--interval", "0.1", "--wait", "0.1")
    assert code == 1 and json.loads(out)["processes"] == [] and "none answered" in err
    code, _, err = await inspect("memory://", "--once")
    assert code == 2 and "metrics listener" in err


@pytest.mark.redis
async def test_layers_count_the_memberships_of_their_own_channels(
    redis_server: RedisServer,
) -> None:
    for layer in (InMemoryChannelLayer(), RedisChannelLayer.from_url(redis_server.url)):
        try:
            channels = [await layer.new_channel() for _ in range(3)]
            for channel in channels:
                await layer.group_add("room", channel)
            await layer.group_add("other", channels[0])
            await layer.group_discard("room", channels[2])
            assert layer.local_groups() == {"room": 2, "other": 1}, layer
        finally:
            await layer.close()


async def test_a_snapshot_that_fails_is_logged_and_the_next_request_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"ipc://{tmp_path / 'layer'}"
    layer = IpcChannelLayer.from_url(url)
    calls = 0

    def source() -> ProcessSnapshot:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the snapshot broke")
        return take_snapshot(role="worker", layers={url: layer})

    responder = Responder(layer, source)
    inspector = Inspector(url, wait=0.3)
    try:
        responder.start()
        await responder.joined.wait()
        assert await inspector.sample() == []
        [found] = await inspector.sample()
    finally:
        await inspector.close()
        await responder.close()  # and closing raises nothing
        await layer.close()
    assert found["role"] == "worker" and calls == 2
    assert any("could not answer" in r.getMessage() for r in caplog.records)


@pytest.mark.redis
async def test_a_process_started_while_redis_is_away_joins_once_it_answers() -> None:
    server = RedisServer()
    layer = RedisChannelLayer.from_url(server.url, outage_timeout=0.5)
    responder = Responder(layer, lambda: take_snapshot(role="worker", layers={}))
    try:
        responder.start()  # returns at once: the process goes on serving
        assert responder.channel is None
        server.start()
        async with asyncio.timeout(30):
            await responder.joined.wait()
        inspector = Inspector(server.url, wait=0.3)
        try:
            [found] = await inspector.sample()
        finally:
            await inspector.close()
        assert found["role"] == "worker"
    finally:
        await responder.close()
        await layer.close()
        server.stop()
