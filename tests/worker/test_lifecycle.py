"""The lifecycle that workers and schedulers share: one run, stop, drain, errors, signals."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from tests.worker.conftest import LogRecords

from kanal.layers import BaseChannelLayer, InMemoryChannelLayer, Message
from kanal.typing import Receive, Scope, Send
from kanal.worker import Scheduler, Worker
from kanal.worker._lifecycle import Lifecycle


async def test_serve_drains_on_sigterm_and_a_second_signal_changes_nothing(
    signal_fallbacks: list[int], worker_log: LogRecords
) -> None:
    layer = InMemoryChannelLayer()
    working = asyncio.Event()
    release = asyncio.Event()
    finished: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            working.set()
            await release.wait()
            finished.append(message["n"])

    before = signal.getsignal(signal.SIGTERM)
    worker = Worker(app, ["jobs"], layer=layer, shutdown_timeout=30)
    serving = asyncio.create_task(worker.serve())
    await worker.started()
    await layer.send("jobs", {"type": "job", "n": 1})
    async with asyncio.timeout(5):
        await working.wait()
    os.kill(os.getpid(), signal.SIGTERM)
    await worker_log.wait_for("Worker got SIGTERM")
    os.kill(os.getpid(), signal.SIGINT)  # while the message is still in progress
    await worker_log.wait_for("Worker got SIGINT")
    assert not serving.done()
    release.set()
    async with asyncio.timeout(5):
        await serving
    # The message in progress was finished, not cut short or handed back.
    assert finished == [1]
    assert worker.handed_back == 0
    assert signal_fallbacks == []
    assert signal.getsignal(signal.SIGTERM) is before
    await layer.close()


async def test_scheduler_serve_stops_on_sigterm(signal_fallbacks: list[int]) -> None:
    layer = InMemoryChannelLayer()
    scheduler = Scheduler(layer=layer)
    serving = asyncio.create_task(scheduler.serve())
    await scheduler.started()
    os.kill(os.getpid(), signal.SIGTERM)
    async with asyncio.timeout(5):
        await serving
    assert signal_fallbacks == []
    await layer.close()


async def test_one_run_and_a_stop_asked_before_it() -> None:
    layer = InMemoryChannelLayer()
    worker = Worker(lambda scope, receive, send: receive(), ["jobs"], layer=layer)
    worker.stop()
    worker.stop()
    async with asyncio.timeout(5):
        await worker.run()  # starts, sees the stop, drains, returns
    await worker.started()
    with pytest.raises(RuntimeError, match="has run already"):
        await worker.run()
    await layer.close()


class Work(Lifecycle):
    """A lifecycle whose one task does what ``step`` says, and which records its drain."""

    def __init__(self, layer: BaseChannelLayer, step: str) -> None:
        super().__init__(layer)
        self.step = step
        self.drained = False

    def _start(self, layer: BaseChannelLayer) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._task(layer))]

    async def _task(self, layer: BaseChannelLayer) -> None:
        message: Message = await layer.receive("work")
        if self.step == "raise":
            raise LookupError(message["why"])
        if self.step == "fail":
            self._fail(ValueError(message["why"]))
            await asyncio.get_running_loop().create_future()  # until cancelled
        if self.step == "close":
            await layer.close()
            await layer.receive("work")

    async def _drain(self, layer: BaseChannelLayer) -> None:
        self.drained = True


@pytest.mark.parametrize(
    ("step", "error"), [("raise", LookupError), ("fail", ValueError), ("return", None)]
)
async def test_a_task_that_ends_stops_the_run_which_raises_after_the_drain(
    step: str, error: type[Exception] | None
) -> None:
    layer = InMemoryChannelLayer()
    work = Work(layer, step)
    running = asyncio.create_task(work.run())
    await work.started()
    await layer.send("work", {"type": "work", "why": "no reason"})
    async with asyncio.timeout(5):
        if error is None:
            await running
        else:
            with pytest.raises(error, match="no reason"):
                await running
    assert work.drained
    await layer.close()


async def test_a_layer_closed_under_the_work_is_not_an_error() -> None:
    layer = InMemoryChannelLayer()
    work = Work(layer, "close")
    running = asyncio.create_task(work.run())
    await work.started()
    await layer.send("work", {"type": "work"})
    async with asyncio.timeout(5):
        await running
    assert work.drained
