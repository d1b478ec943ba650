"""A worker restart moves each WebSocket to the next worker without running the
application's connect again (``websocket.suspend`` / ``websocket.resume``)."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.bridge import apps
from tests.bridge.conftest import StartWorker
from websockets.asyncio.client import connect

from kanal.testing import LiveServer


async def test_a_handed_over_websocket_resumes_without_connect(
    server: LiveServer, start_worker: StartWorker
) -> None:
    apps.CALLS.clear()
    first, first_task = await start_worker()
    async with (
        connect(f"{server.ws_url}/greet?ann") as ann,
        connect(f"{server.ws_url}/greet?bob") as bob,
    ):
        async with asyncio.timeout(5):
            assert await ann.recv() == "welcome ann"
            assert await bob.recv() == "welcome bob"
        first.stop()
        await first_task
        assert first.handed_over == 2
        await ann.send("while no worker")
        second, second_task = await start_worker()
        async with asyncio.timeout(5):
            # No second welcome: the first thing after the restart is ann's line, which
            # reaches bob too (the group was joined again) with ann's name (the state).
            assert await ann.recv() == "ann: while no worker"
            assert await bob.recv() == "ann: while no worker"
            await bob.send("hello")
            assert await ann.recv() == "bob: hello"
            assert await bob.recv() == "bob: hello"
        assert second.resumed == 2
    second.stop()
    await second_task
    assert Counter(apps.CALLS) == Counter(
        [("ann", "connect"), ("bob", "connect"), ("ann", "resume"), ("bob", "resume")]
    )


async def test_an_application_that_ignores_suspend_has_its_connect_replayed(
    server: LiveServer, start_worker: StartWorker
) -> None:
    first, first_task = await start_worker()
    async with connect(f"{server.ws_url}/plain") as ws:
        await ws.send("one")
        assert await ws.recv() == "plain:one"
        first.stop()
        await first_task  # it asked for another event after websocket.suspend: handed over
        assert first.handed_over == 1
        second, second_task = await start_worker()
        await ws.send("two")
        async with asyncio.timeout(5):
            assert await ws.recv() == "plain:two"  # its second accept never reached us
        assert second.resumed == 1
    second.stop()
    await second_task
