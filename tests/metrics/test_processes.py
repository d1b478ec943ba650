"""Metrics of real processes: `kanal serve --workers 2 --metrics`, `kanal worker --metrics`."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest
import websockets
from tests.child_process import child_process
from tests.metrics.scrape import Samples, parse, value

from kanal.layers.redis import RedisChannelLayer
from kanal.testing import RedisServer, free_port
from kanal.worker import ServiceError, call, call_stats


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return parse(response.text)


def pids(samples: Samples) -> dict[str, int]:
    """Each reporting process's label and pid, from ``kanal_process_info``."""
    found = {}
    for (name, labels), _ in samples.items():
        if name == "kanal_process_info":
            found[dict(labels)["process"]] = int(dict(labels)["pid"])
    return found


@pytest.mark.slow
async def test_one_scrape_sees_every_worker_process_and_a_replaced_one() -> None:
    port, metrics = free_port(), free_port()
    async with child_process(
        "-m",
        "kanal.cli",
        "serve",
        "tests.metrics.apps:app",
        "--port",
        str(port),
        "--workers",
        "2",
        "--metrics",
        str(metrics),
    ) as server:
        await server.wait_for(f"kanal metrics on http://127.0.0.1:{metrics}/metrics")
        await server.wait_for("all 2 workers ready")
        sockets = [await websockets.connect(f"ws://127.0.0.1:{port}/ws") for _ in range(6)]
        for ws in sockets:
            await ws.send("hello")
            assert await ws.recv() == "hello"
        samples = await scrape(metrics)
        assert value(samples, "kanal_processes_reporting") == 2
        assert value(samples, "kanal_processes_expected") == 2
        before = pids(samples)
        assert sorted(before) == ["0", "1"] and len(set(before.values())) == 2
        # However the kernel spread the sockets, the processes' counts add up to them.
        assert value(samples, "kanal_connections_open", protocol="websocket") == 6
        assert value(samples, "kanal_websocket_messages_received_total") == 6
        for ws in sockets:
            await ws.close()

        os.kill(before["1"], signal.SIGKILL)
        await server.wait_for(rf"worker {before['1']} exited with code -9")
        await server.wait_for("kanal server ready on")
        samples = await scrape(metrics)
        after = pids(samples)
        assert after["0"] == before["0"] and after["1"] not in before.values()
        assert value(samples, "kanal_processes_reporting") == 2
        # The new process counts from zero (Prometheus' rate() sees a reset).
        assert value(samples, "kanal_websocket_messages_received_total", process="1") == 0
        assert await server.stop() == 0


@pytest.mark.redis
@pytest.mark.slow
async def test_a_worker_reports_its_task_durations_and_failures(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/5"
    metrics = free_port()
    async with child_process(
        "-m",
        "kanal.cli",
        "worker",
        "tests.metrics.apps:services",
        "double",
        "--layer",
        url,
        "--metrics",
        str(metrics),
        # service() replies through get_channel_layer(), which reads $KANAL_LAYER.
        env={"KANAL_LAYER": url},
    ) as worker:
        await worker.wait_for(f"kanal metrics on http://127.0.0.1:{metrics}/metrics")
        await worker.wait_for("worker listening on double")
        before = call_stats().get("double")
        layer = RedisChannelLayer.from_url(url)
        try:
            for n in (1, 2, 3):
                assert await call("double", {"type": "x", "n": n}, layer=layer) == {"n": 2 * n}
            with pytest.raises(ServiceError, match="negative"):
                await call("double", {"type": "x", "n": -1}, layer=layer)
        finally:
            await layer.close()
        samples = await scrape(metrics)
        # The fourth message's handling ends when the instance asks for the next one,
        # which it does after replying: wait for that scrape (each scrape lets it run).
        async with asyncio.timeout(10):
            while value(samples, "kanal_worker_task_duration_seconds_count") < 4:
                samples = await scrape(metrics)
        assert value(samples, "kanal_worker_task_duration_seconds_count", channel="double") == 4
        # service() answers an exception with an error reply: the instance does not fail.
        assert value(samples, "kanal_worker_task_failures_total", channel="double") == 0
        assert value(samples, "kanal_process_info", role="worker") == 1
        assert value(samples, "kanal_layer_messages_received_total", layer="redis") == 4
        assert value(samples, "kanal_layer_round_trip_seconds_count", layer="redis") > 0
        assert await worker.stop() == 0
    # The calling side: this process counted its calls (other tests may have made some).
    mine = call_stats()["double"]
    calls, errors, timeouts, answered = (
        (before.calls, before.errors, before.timeouts, before.latency.snapshot().count)
        if before is not None
        else (0, 0, 0, 0)
    )
    assert (mine.calls - calls, mine.errors - errors, mine.timeouts - timeouts) == (4, 1, 0)
    assert mine.latency.snapshot().count - answered == 4
