"""Request/reply over the layer: call(), service(), reply()."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kanal.exceptions import ChannelFull, ServiceError, ServiceTimeout
from kanal.layers import InMemoryChannelLayer
from kanal.routing import ChannelNameRouter
from kanal.worker import Worker, call, call_sync, reply, service
from kanal.worker._services import _hub


@pytest.fixture
async def layer() -> AsyncIterator[InMemoryChannelLayer]:
    layer = InMemoryChannelLayer()
    yield layer
    await layer.close()


async def start_worker(
    app: Any, channels: list[str], layer: InMemoryChannelLayer, concurrency: int = 2
) -> Worker:
    worker = Worker(app, channels, layer=layer, concurrency=concurrency, shutdown_timeout=2)
    task = asyncio.create_task(worker.run())
    worker.task = task  # type: ignore[attr-defined]
    await worker.started()
    return worker


async def stop_worker(worker: Worker) -> None:
    worker.stop()
    async with asyncio.timeout(5):
        await worker.task  # type: ignore[attr-defined]


async def test_call_returns_the_service_result(layer: InMemoryChannelLayer) -> None:
    async def double(message: dict[str, Any]) -> dict[str, Any]:
        return {"doubled": message["n"] * 2}

    def shout(message: dict[str, Any]) -> str:  # a sync service runs in a thread
        assert threading.current_thread() is not threading.main_thread()
        return str(message["text"]).upper()

    app = ChannelNameRouter(
        {"math": service(double, layer=layer), "shout": service(shout, layer=layer)}
    )
    worker = await start_worker(app, ["math", "shout"], layer)
    try:
        results = await asyncio.gather(
            *(call("math", {"type": "double", "n": i}, layer=layer) for i in range(20))
        )
        assert results == [{"doubled": i * 2} for i in range(20)]
        assert await call("shout", {"type": "shout", "text": "hi"}, layer=layer) == "HI"
    finally:
        await stop_worker(worker)
    assert worker.handled == 21


async def test_service_error_comes_back_to_the_caller(
    layer: InMemoryChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(message: dict[str, Any]) -> None:
        raise ValueError(f"cannot handle {message['n']}")

    async def unsendable(message: dict[str, Any]) -> object:
        return {1, 2, 3}

    app = ChannelNameRouter(
        {"broken": service(broken, layer=layer), "unsendable": service(unsendable, layer=layer)}
    )
    worker = await start_worker(app, ["broken", "unsendable"], layer)
    try:
        with pytest.raises(ServiceError) as info:
            await call("broken", {"type": "job", "n": 7}, layer=layer)
        assert info.value.remote_type == "ValueError"
        assert info.value.remote_message == "cannot handle 7"
        assert "'broken'" in str(info.value) and "cannot handle 7" in str(info.value)
        with pytest.raises(ServiceError, match="InvalidMessage"):
            await call("unsendable", {"type": "job"}, layer=layer)
        # The service keeps working after a failure.
        with pytest.raises(ServiceError):
            await call("broken", {"type": "job", "n": 8}, layer=layer)
    finally:
        await stop_worker(worker)
    assert any(
        "failed to handle a 'job' message" in record.getMessage()
        for record in caplog.records
        if record.levelno == logging.ERROR
    )


async def test_timeout_and_late_reply_discarded(layer: InMemoryChannelLayer) -> None:
    release = asyncio.Event()

    async def slow(message: dict[str, Any]) -> str:
        await release.wait()
        return "late"

    app = ChannelNameRouter({"slow": service(slow, layer=layer)})
    # One instance: the late reply is sent before the next call's, on the same reply channel.
    worker = await start_worker(app, ["slow"], layer, concurrency=1)
    try:
        with pytest.raises(ServiceTimeout) as info:
            await call("slow", {"type": "job"}, timeout=0.05, layer=layer)
        assert isinstance(info.value, TimeoutError)
        assert info.value.channel == "slow"
        hub = _hub(layer)
        assert hub.waiting == {}
        release.set()
        # A fresh call gets its own answer, not the late one, which was dropped, not kept.
        assert await call("slow", {"type": "job", "fresh": True}, layer=layer) == "late"
        assert hub.late == 1
        assert layer.stats().channels[hub.channel].pending == 0
    finally:
        await stop_worker(worker)


async def test_call_to_a_full_service_channel_raises(layer: InMemoryChannelLayer) -> None:
    small = InMemoryChannelLayer(capacity=1)
    await small.send("busy", {"type": "queued"})
    with pytest.raises(ChannelFull):
        await call("busy", {"type": "job"}, layer=small)
    await small.close()


async def test_reply_to_a_plain_task_does_nothing(layer: InMemoryChannelLayer) -> None:
    assert await reply({"type": "task"}, "ignored", layer=layer) is False


def test_call_sync_from_plain_code() -> None:
    layer = InMemoryChannelLayer()

    async def echo(message: dict[str, Any]) -> Any:
        return message["payload"]

    worker = Worker(ChannelNameRouter({"echo": service(echo, layer=layer)}), ["echo"], layer=layer)
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    def serve() -> None:
        async def main() -> None:
            task = asyncio.create_task(worker.run())
            await worker.started()
            ready.set()
            await task

        loop.run_until_complete(main())

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert ready.wait(5)
        assert call_sync("echo", {"type": "echo", "payload": [1, "two"]}, layer=layer) == [1, "two"]
        with pytest.raises(ServiceTimeout):
            call_sync("nobody-listens", {"type": "echo"}, timeout=0.05, layer=layer)
    finally:
        loop.call_soon_threadsafe(worker.stop)
        thread.join(10)
        loop.run_until_complete(layer.close())  # ends the reply channel's task too
        loop.close()
    assert not thread.is_alive()
