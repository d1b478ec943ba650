"""Delayed messages and periodic jobs, with several schedulers at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from kanal.exceptions import ConfigError, InvalidMessage
from kanal.layers import InMemoryChannelLayer, layer_from_url
from kanal.testing import RedisServer
from kanal.worker import SCHEDULER_CHANNEL, Cron, Every, Job, Scheduler, send_later


async def test_two_schedulers_fire_each_tick_once() -> None:
    layer = InMemoryChannelLayer()
    job = Job("heartbeat", "beats", {"type": "heartbeat"}, Every(0.05))
    schedulers = [Scheduler([job], layer=layer) for _ in range(2)]
    tasks = [asyncio.create_task(s.run()) for s in schedulers]
    async with asyncio.timeout(10):
        for _ in range(5):
            assert await layer.receive("beats") == {"type": "heartbeat"}
    for s in schedulers:
        s.stop()
    await asyncio.gather(*tasks)
    fired = sum(s.fired for s in schedulers)
    skipped = sum(s.skipped for s in schedulers)
    pending = layer.stats().channels["beats"].pending
    assert fired == 5 + pending  # one message per tick, whoever won it
    assert abs(skipped - fired) <= 1  # the other scheduler saw each tick claimed
    await layer.close()


async def test_send_later_waits_and_keeps_due_order() -> None:
    layer = InMemoryChannelLayer()
    scheduler = Scheduler(layer=layer)
    task = asyncio.create_task(scheduler.run())
    await scheduler.started()
    start = time.monotonic()
    await send_later("out", {"type": "second"}, 0.3, layer=layer)
    await send_later("out", {"type": "first"}, 0.15, layer=layer)
    async with asyncio.timeout(5):
        first = await layer.receive("out")
        first_at = time.monotonic() - start
        second = await layer.receive("out")
    assert [first["type"], second["type"]] == ["first", "second"]
    assert first_at >= 0.14
    assert scheduler.delivered == 2
    scheduler.stop()
    await task
    await layer.close()


async def test_a_stopping_scheduler_hands_back_what_it_holds() -> None:
    layer = InMemoryChannelLayer()
    scheduler = Scheduler(layer=layer)
    task = asyncio.create_task(scheduler.run())
    await scheduler.started()
    await send_later("out", {"type": "much-later"}, 3600, layer=layer)
    await send_later("out", {"type": "due-now"}, 0, layer=layer)
    async with asyncio.timeout(5):
        assert (await layer.receive("out"))["type"] == "due-now"
    scheduler.stop()
    await task
    # The held message is back in the scheduler channel for the next scheduler.
    handed_back = await layer.receive(SCHEDULER_CHANNEL)
    assert handed_back["channel"] == "out"
    assert handed_back["message"] == {"type": "much-later"}
    assert handed_back["due"] > time.time() + 3500
    await layer.close()


async def test_send_later_refuses_bad_input_at_once() -> None:
    layer = InMemoryChannelLayer()
    with pytest.raises(InvalidMessage, match=r"message\['when'\]"):
        await send_later("out", {"type": "x", "when": object()}, 1, layer=layer)
    with pytest.raises(ValueError, match="delay"):
        await send_later("out", {"type": "x"}, -1, layer=layer)
    with pytest.raises(TypeError):
        await send_later("bad name", {"type": "x"}, 1, layer=layer)
    assert layer.stats().sent == 0
    await layer.close()


def test_schedules() -> None:
    assert Every(60).next_after(120.0) == 180.0
    assert Every(60).next_after(119.5) == 120.0
    # 2023-11-14 22:13:20 UTC -> the next multiple of 5 minutes, 22:15:00.
    assert Cron("*/5 * * * *").next_after(1_700_000_000.0) == 1_700_000_100.0
    with pytest.raises(ConfigError, match="cron"):
        Cron("every minute")
    with pytest.raises(ConfigError, match="positive"):
        Every(0)


def test_bad_jobs() -> None:
    with pytest.raises(ConfigError, match="job name"):
        Job("has space", "out", {"type": "x"}, Every(1))
    with pytest.raises(ConfigError, match="process-specific"):
        Job("j", "specific.a!b", {"type": "x"}, Every(1))
    job = Job("j", "out", {"type": "x"}, Every(1))
    with pytest.raises(ConfigError, match="unique"):
        Scheduler([job, job])


@pytest.mark.redis
async def test_schedulers_in_two_processes_fire_each_tick_once(redis_server: RedisServer) -> None:
    """Two schedulers on two layer instances (as in two processes) share one Redis."""
    layers = [layer_from_url(redis_server.url) for _ in range(3)]
    reader = layers[2]
    await reader.flush()
    job = Job("redis-heartbeat", "beats-redis", {"type": "heartbeat"}, Every(0.1))
    schedulers = [Scheduler([job], layer=layer, accept_delayed=False) for layer in layers[:2]]
    tasks = [asyncio.create_task(s.run()) for s in schedulers]
    async with asyncio.timeout(15):
        for _ in range(5):
            assert await reader.receive("beats-redis") == {"type": "heartbeat"}
    for s in schedulers:
        s.stop()
    await asyncio.gather(*tasks)
    fired = sum(s.fired for s in schedulers)
    late = 0
    try:
        while True:
            async with asyncio.timeout(0.3):
                await reader.receive("beats-redis")
            late += 1
    except TimeoutError:
        pass
    assert fired == 5 + late
    assert abs(sum(s.skipped for s in schedulers) - fired) <= 1
    await reader.flush()
    for layer in layers:
        await layer.close()
