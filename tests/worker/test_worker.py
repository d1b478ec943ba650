"""The worker: instances per channel, sharing, failures and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from tests.worker.conftest import LogRecords

from kanal.consumers import AsyncConsumer
from kanal.exceptions import ConfigError, RouteNotFound, WorkerError
from kanal.layers import InMemoryChannelLayer
from kanal.routing import ChannelNameRouter
from kanal.worker import Worker


def recorder(
    seen: list[tuple[str, Any]], name: str, enough: int = 0, done: asyncio.Event | None = None
) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append((name, message["n"]))
            if done is not None and len(seen) >= enough:
                done.set()

    return app


async def test_workers_share_a_channel_each_message_once() -> None:
    layer = InMemoryChannelLayer(capacity=1000)
    seen: list[tuple[str, Any]] = []
    all_seen = asyncio.Event()
    workers = [
        Worker(
            ChannelNameRouter({"jobs": recorder(seen, f"w{i}", 300, all_seen)}),
            ["jobs"],
            layer=layer,
            concurrency=3,
        )
        for i in range(2)
    ]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    for worker in workers:
        await worker.started()
    for i in range(300):
        await layer.send("jobs", {"type": "job", "n": i})
    async with asyncio.timeout(10):
        await all_seen.wait()
    for worker in workers:
        worker.stop()
    await asyncio.gather(*tasks)
    assert sorted(n for _, n in seen) == list(range(300))
    assert {name for name, _ in seen} == {"w0", "w1"}
    # Nothing was taken from the channel that was not handled.
    assert layer.stats().channels["jobs"].pending == 0
    await layer.close()


async def test_consumer_classes_run_in_a_worker() -> None:
    layer = InMemoryChannelLayer()
    done: asyncio.Queue[str] = asyncio.Queue()

    class Thumbnails(AsyncConsumer):
        channel_layer = layer

        async def thumbnail_make(self, message: dict[str, Any]) -> None:
            await done.put(f"{self.scope['channel']}:{message['image']}")

    worker = Worker(ChannelNameRouter({"thumbs": Thumbnails.as_asgi()}), ["thumbs"], layer=layer)
    task = asyncio.create_task(worker.run())
    await worker.started()
    await layer.send("thumbs", {"type": "thumbnail.make", "image": "a.png"})
    async with asyncio.timeout(5):
        assert await done.get() == "thumbs:a.png"
    worker.stop()
    await task
    await layer.close()


async def test_failed_message_is_logged_and_the_instance_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer = InMemoryChannelLayer()
    handled: asyncio.Queue[int] = asyncio.Queue()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["n"] == 1:
                raise RuntimeError("bad input 1")
            await handled.put(message["n"])

    worker = Worker(app, ["jobs"], layer=layer)
    task = asyncio.create_task(worker.run())
    await worker.started()
    for n in range(3):
        await layer.send("jobs", {"type": "job.run", "n": n})
    async with asyncio.timeout(5):
        assert [await handled.get() for _ in range(2)] == [0, 2]
    worker.stop()
    await task
    assert worker.failed == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "'job.run'" in r.getMessage() and "'jobs'" in r.getMessage() and r.exc_info for r in errors
    )
    await layer.close()


async def test_setup_failure_stops_the_worker() -> None:
    layer = InMemoryChannelLayer()
    worker = Worker(ChannelNameRouter({"known": recorder([], "x")}), ["unknown"], layer=layer)
    with pytest.raises(WorkerError, match="'unknown' failed at start") as info:
        async with asyncio.timeout(5):
            await worker.run()
    assert isinstance(info.value.__cause__, RouteNotFound)
    await layer.close()


async def test_graceful_shutdown_finishes_or_hands_back() -> None:
    layer = InMemoryChannelLayer()
    started: asyncio.Queue[str] = asyncio.Queue()
    finished: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            await started.put(message["kind"])
            if message["kind"] == "stuck":
                await asyncio.get_running_loop().create_future()  # never finishes
            await asyncio.sleep(0.05)  # some work in progress during the shutdown
            finished.append(message["kind"])

    worker = Worker(app, ["jobs"], layer=layer, concurrency=3, shutdown_timeout=0.5)
    task = asyncio.create_task(worker.run())
    await worker.started()
    await layer.send("jobs", {"type": "job", "kind": "quick"})
    await layer.send("jobs", {"type": "job", "kind": "stuck"})
    async with asyncio.timeout(5):
        assert {await started.get(), await started.get()} == {"quick", "stuck"}
    await layer.send("jobs", {"type": "job", "kind": "queued"})
    worker.stop()
    async with asyncio.timeout(5):
        await task
    assert finished == ["quick"] or finished == ["quick", "queued"]
    assert worker.handed_back == 1
    leftovers = []
    while layer.stats().channels["jobs"].pending:
        leftovers.append((await layer.receive("jobs"))["kind"])
    # Whatever was not finished is back in the channel for the next worker: nothing lost.
    assert sorted(finished + leftovers) == ["queued", "quick", "stuck"]
    await layer.close()


async def test_worker_sends_nowhere(worker_log: LogRecords) -> None:
    layer = InMemoryChannelLayer()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.send", "text": "to whom?"})

    worker = Worker(app, ["jobs"], layer=layer)
    task = asyncio.create_task(worker.run())
    await worker.started()
    await layer.send("jobs", {"type": "job"})
    error = await worker_log.wait_for(level=logging.ERROR)
    worker.stop()
    await task
    assert worker.failed == 1
    assert error.exc_info is not None and "has no client" in str(error.exc_info[1])
    await layer.close()


@pytest.mark.parametrize(
    ("channels", "options", "message"),
    [
        ([], {}, "at least one channel"),
        (["specific.abc!def"], {}, "process-specific"),
        (["bad name"], {}, "invalid channel name"),
        (["jobs"], {"concurrency": 0}, "concurrency must be a positive integer"),
    ],
)
def test_bad_configuration(channels: list[str], options: dict[str, Any], message: str) -> None:
    with pytest.raises((ConfigError, TypeError), match=message):
        Worker(lambda *a: None, channels, **options)


async def test_a_consumer_between_two_messages_at_the_stop_ends_at_once() -> None:
    """A kanal consumer reads the worker's receive from a task of its own: the stop must end
    the instance, not only that task (the instance then waited the whole shutdown timeout)."""
    layer = InMemoryChannelLayer()
    handling = asyncio.Event()
    release = asyncio.Event()

    class Job(AsyncConsumer):
        channel_layer = layer

        async def job_run(self, message: dict[str, Any]) -> None:
            handling.set()
            await release.wait()

    worker = Worker(
        ChannelNameRouter({"jobs": Job.as_asgi()}), ["jobs"], layer=layer, shutdown_timeout=60
    )
    task = asyncio.create_task(worker.run())
    await worker.started()
    await layer.send("jobs", {"type": "job.run"})
    async with asyncio.timeout(5):
        await handling.wait()
    worker.stop()  # while the message is in progress: the consumer asks for the next after
    release.set()
    async with asyncio.timeout(10):  # a bound far under the 60 s it waited before
        await task
    assert worker.handled == 1 and worker.handed_back == 0
    await layer.close()


async def test_an_application_that_cleans_up_after_the_stop_can_still_await() -> None:
    """The stop ends an instance that asks for more with CancelledError; an application
    reading in its own task may still await in its cleanup."""
    layer = InMemoryChannelLayer()
    cleaned: list[str] = []
    handling = asyncio.Event()
    release = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            while True:
                await receive()
                handling.set()
                await release.wait()
        finally:
            await asyncio.sleep(0)  # an await of its cleanup, as a group_discard would be
            cleaned.append("done")

    worker = Worker(app, ["jobs"], layer=layer, shutdown_timeout=60)
    task = asyncio.create_task(worker.run())
    await worker.started()
    await layer.send("jobs", {"type": "job"})
    async with asyncio.timeout(5):
        await handling.wait()
    worker.stop()
    release.set()
    async with asyncio.timeout(10):
        await task
    assert cleaned == ["done"] and worker.handled == 1
    await layer.close()
