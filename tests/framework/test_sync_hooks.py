"""Hooks around every sync handler call kanal makes off the event loop (``run_sync``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kanal.classic import ClassicApplication, route
from kanal.consumers import (
    JsonWebsocketConsumer,
    StopConsumer,
    SyncConsumer,
    add_sync_hooks,
    remove_sync_hooks,
    run_sync,
)
from kanal.layers import InMemoryChannelLayer
from kanal.routing import ChannelNameRouter
from kanal.testing import ApplicationCommunicator, WebsocketCommunicator
from kanal.worker import service

# What the hooks and handlers of a test did, in order: (event, thread ident).
Events = list[tuple[str, int]]


@pytest.fixture
def events() -> Iterator[Events]:
    """Records ``before`` and ``after`` (with their thread) for the hooks of the test."""
    seen: Events = []
    add_sync_hooks(
        "test",
        before=lambda: seen.append(("before", threading.get_ident())),
        after=lambda: seen.append(("after", threading.get_ident())),
    )
    yield seen
    remove_sync_hooks("test")


def handler_event(seen: Events, name: str) -> None:
    seen.append((name, threading.get_ident()))


async def test_hooks_run_around_the_call_in_its_thread(events: Events) -> None:
    def work(a: int, *, b: int) -> int:
        handler_event(events, "work")
        return a + b

    assert await run_sync(work, 1, b=2) == 3
    assert [name for name, _ in events] == ["before", "work", "after"]
    threads = {thread for _, thread in events}
    assert len(threads) == 1 and threads != {threading.get_ident()}  # one thread, not ours


async def test_after_runs_when_the_handler_raises(events: Events) -> None:
    def broken() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await run_sync(broken)
    assert [name for name, _ in events] == ["before", "after"]


async def test_a_failing_before_stops_the_call_and_the_pairs_that_ran_are_undone(
    events: Events,
) -> None:
    def refuse() -> None:
        raise RuntimeError("no database")

    add_sync_hooks("refuser", before=refuse, after=lambda: handler_event(events, "never"))
    ran: list[str] = []
    try:
        with pytest.raises(RuntimeError, match="no database"):
            await run_sync(ran.append, "ran")
    finally:
        remove_sync_hooks("refuser")
    assert ran == []
    assert [name for name, _ in events] == ["before", "after"]  # the first pair's after ran


async def test_befores_in_order_afters_in_reverse_and_a_key_is_replaced(events: Events) -> None:
    add_sync_hooks("second", before=lambda: handler_event(events, "b2"))
    add_sync_hooks("second", before=lambda: handler_event(events, "B2"))  # replaces "b2"
    add_sync_hooks("third", after=lambda: handler_event(events, "a3"))
    try:
        await run_sync(handler_event, events, "work")
    finally:
        assert remove_sync_hooks("second") and remove_sync_hooks("third")
    assert [name for name, _ in events] == ["before", "B2", "work", "a3", "after"]
    assert not remove_sync_hooks("third")
    events.clear()
    await run_sync(handler_event, events, "work")
    assert [name for name, _ in events] == ["before", "work", "after"]


def test_a_pair_needs_a_hook() -> None:
    with pytest.raises(ValueError, match="before or an after"):
        add_sync_hooks("empty")


async def test_sync_consumers_run_each_handler_between_the_hooks(events: Events) -> None:
    class Echo(JsonWebsocketConsumer):
        uses_channel_layer = False

        def connect(self) -> None:
            handler_event(events, "connect")
            self.accept()

        def receive_json(self, content: Any, **kwargs: Any) -> None:
            handler_event(events, "receive")
            self.send_json(content)

        def disconnect(self, code: int) -> None:
            handler_event(events, "disconnect")

    communicator = WebsocketCommunicator(Echo.as_asgi(), "/ws/")
    assert (await communicator.connect(timeout=5))[0]
    await communicator.send_json_to({"n": 1})
    assert await communicator.receive_json_from(timeout=5) == {"n": 1}
    await communicator.disconnect(timeout=5)
    names = [name for name, _ in events]
    assert names == [
        *("before", "connect", "after"),
        *("before", "receive", "after"),
        *("before", "disconnect", "after"),
    ]
    # Each call's hooks ran in that call's thread.
    for start in range(0, len(events), 3):
        assert len({thread for _, thread in events[start : start + 3]}) == 1


async def test_a_worker_channel_sync_consumer_and_a_sync_service_run_between_the_hooks(
    events: Events,
) -> None:
    layer = InMemoryChannelLayer()

    class Jobs(SyncConsumer):
        def job_run(self, message: dict[str, Any]) -> None:
            handler_event(events, "job")

        def job_stop(self, message: dict[str, Any]) -> None:
            raise StopConsumer

    def shout(message: dict[str, Any]) -> str:
        handler_event(events, "service")
        return str(message["text"]).upper()

    shouter = ApplicationCommunicator(
        ChannelNameRouter({"shout": service(shout, layer=layer)}),
        {"type": "channel", "channel": "shout"},
    )
    reply = await layer.new_channel()
    await shouter.send_input(
        {"type": "shout", "text": "hi", "reply_channel": reply, "correlation_id": "1"}
    )
    assert (await layer.receive(reply))["result"] == "HI"  # sent once the call was over
    await shouter.stop()
    jobs = ApplicationCommunicator(
        ChannelNameRouter({"jobs": Jobs.as_asgi(channel_layer=layer)}),
        {"type": "channel", "channel": "jobs"},
    )
    await jobs.send_input({"type": "job.run"})
    await jobs.send_input({"type": "job.stop"})
    await jobs.wait(timeout=5)  # the consumer stopped: every call it made is over
    await layer.close()
    assert [name for name, _ in events] == [
        *("before", "service", "after"),
        *("before", "job", "after"),
        *("before", "after"),  # job.stop's handler raised StopConsumer
    ]


async def test_classic_consumers_run_between_the_hooks(
    events: Events, default_channel_layer: Any
) -> None:
    def connect(message: Any) -> None:
        handler_event(events, "connect")

    app = ClassicApplication([route("websocket.connect", connect)])
    communicator = WebsocketCommunicator(app, "/")
    assert (await communicator.connect(timeout=5))[0]
    await communicator.disconnect(timeout=5)
    assert [name for name, _ in events][:3] == ["before", "connect", "after"]
