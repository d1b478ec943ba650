"""Workers, services and the decoupled mode as real processes sharing a real Redis."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from tests.child_process import ChildProcess, child_process
from websockets.asyncio.client import connect

from kanal.exceptions import ServiceError
from kanal.layers import BaseChannelLayer, layer_from_url
from kanal.testing import RedisServer, free_port
from kanal.worker import call

pytestmark = pytest.mark.redis

HERE = Path(__file__).resolve().parent


@asynccontextmanager
async def kanal(layer_url: str, *args: str, ready: str) -> AsyncIterator[ChildProcess]:
    """``kanal ARGS...`` on the layer at ``layer_url``, once it has logged ``ready``."""
    command = child_process("-m", "kanal.cli", *args, env={"KANAL_LAYER": layer_url}, path=(HERE,))
    async with command as process:
        await process.wait_for(re.escape(ready), within=15)
        yield process


@pytest.fixture
async def layer(redis_server: RedisServer) -> AsyncIterator[BaseChannelLayer]:
    layer = layer_from_url(redis_server.url)
    await layer.flush()
    yield layer
    await layer.flush()
    await layer.close()


async def test_two_worker_processes_share_a_channel_and_answer_calls(
    redis_server: RedisServer, layer: BaseChannelLayer
) -> None:
    ready = "worker listening on"
    async with (
        kanal(redis_server.url, "worker", "worker_apps:tasks", "jobs", "whoami", ready=ready) as a,
        kanal(redis_server.url, "worker", "worker_apps:tasks", "jobs", "whoami", ready=ready) as b,
    ):
        report_to = await layer.new_channel()
        for n in range(40):
            await layer.send("jobs", {"type": "job.run", "n": n, "report_to": report_to})
        async with asyncio.timeout(15):
            reports = [await layer.receive(report_to) for _ in range(40)]
        assert sorted(r["n"] for r in reports) == list(range(40))  # each job once
        pids = {r["pid"] for r in reports}
        assert pids <= {a.pid, b.pid}
        answer = await call(
            "whoami", {"type": "whoami", "payload": [1, 2]}, timeout=10, layer=layer
        )
        assert answer["echo"] == [1, 2] and answer["pid"] in {a.pid, b.pid}
        with pytest.raises(ServiceError, match="no such thing: x"):
            await call("whoami", {"type": "whoami", "fail": "x"}, timeout=10, layer=layer)
        # A plain script or a Celery-style task: sync code with a layer of its own.
        script_layer = layer_from_url(redis_server.url)

        def sync_task() -> None:
            script_layer.sync.send("jobs", {"type": "job.run", "n": 99, "report_to": report_to})
            script_layer.sync.close()

        await asyncio.to_thread(sync_task)
        async with asyncio.timeout(15):
            assert (await layer.receive(report_to))["n"] == 99
        assert await a.stop() == 0  # SIGTERM: a graceful exit
        assert any("worker stopped" in line for line in a.log)


async def test_a_worker_given_layer_answers_calls_on_that_layer(
    redis_server: RedisServer, layer: BaseChannelLayer
) -> None:
    """``--layer`` alone (no $KANAL_LAYER): a service's reply goes out on that layer too,
    not on the process's default memory:// layer, where the caller would never see it."""
    command = child_process(
        "-m", "kanal.cli", "worker", "--layer", redis_server.url, "worker_apps:tasks", "whoami",
        env={"KANAL_LAYER": ""}, path=(HERE,),
    )  # fmt: skip
    async with command as process:
        await process.wait_for(re.escape("worker listening on"), within=15)
        answer = await call("whoami", {"type": "whoami", "payload": [3]}, timeout=10, layer=layer)
        assert answer == {"echo": [3], "pid": process.pid}


async def test_a_scheduler_process_fires_jobs_and_stops_on_sigterm(
    redis_server: RedisServer, layer: BaseChannelLayer
) -> None:
    async with kanal(redis_server.url, "scheduler", "worker_apps", ready="scheduler firing") as s:
        async with asyncio.timeout(15):
            assert await layer.receive("beats") == {"type": "beat"}
        assert await s.stop() == 0  # SIGTERM: a graceful exit
    assert any("Scheduler got SIGTERM" in line for line in s.log), s.log


async def test_decoupled_mode_survives_a_worker_redeploy(redis_server: RedisServer) -> None:
    port = free_port()
    url = redis_server.url
    serve = ("serve", "--bridge", "--host", "127.0.0.1", "--port", str(port))
    bridge_worker = ("worker", "--bridge", "worker_apps:web")
    ready_worker = "bridge worker taking connections"
    async with kanal(url, *serve, ready="ready on"):
        async with kanal(url, *bridge_worker, ready=ready_worker) as first:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{port}/")
            assert response.text == f"hello from {first.pid}"
            ws = await connect(f"ws://127.0.0.1:{port}/ws")
            await ws.send("one")
            assert await ws.recv() == f"one:{first.pid}"
            assert await first.stop() == 0  # SIGTERM: the connection is handed over
            assert any("1 handed over" in line for line in first.log), first.log
        await ws.send("while-no-worker")
        async with kanal(url, *bridge_worker, ready=ready_worker) as second:
            async with asyncio.timeout(10):
                assert await ws.recv() == f"while-no-worker:{second.pid}"
                await ws.send("two")
                assert await ws.recv() == f"two:{second.pid}"
            await ws.close()
        # No worker at all: HTTP is refused with 503, not left hanging.
        async with httpx.AsyncClient(timeout=20) as client:
            response = await client.get(f"http://127.0.0.1:{port}/")
        assert response.status_code == 503
