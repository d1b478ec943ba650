"""The synchronous facade: one background loop for the whole process, not one per call."""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import threading
import warnings
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from kanal.exceptions import LayerClosed
from kanal.layers import InMemoryChannelLayer
from kanal.layers._background import is_background_loop


class Recording(InMemoryChannelLayer):
    """Notes the loop and the thread each send runs on."""

    def __init__(self, seen: list[tuple[asyncio.AbstractEventLoop, str]]) -> None:
        super().__init__()
        self.seen = seen

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self.seen.append((asyncio.get_running_loop(), threading.current_thread().name))
        await super().send(channel, message)


def test_calls_from_any_thread_share_one_background_loop() -> None:
    seen: list[tuple[asyncio.AbstractEventLoop, str]] = []
    first, second = Recording(seen), Recording(seen)
    first.sync.send("jobs", {"type": "a"})
    second.sync.send("jobs", {"type": "b"})
    threads = [
        threading.Thread(target=layer.sync.send, args=("jobs", {"type": "c"}))
        for layer in (first, second)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(seen) == 4
    assert len({id(loop) for loop, _ in seen}) == 1
    assert {name for _, name in seen} == {"kanal-sync-layer"}
    assert [first.sync.receive("jobs", timeout=5)["type"] for _ in range(2)] == ["a", "c"]
    assert [second.sync.receive("jobs", timeout=5)["type"] for _ in range(2)] == ["b", "c"]
    first.sync.close()
    second.sync.close()


def test_interrupted_receive_does_not_take_the_next_message() -> None:
    """Ctrl+C in a script waiting on ``sync.receive`` leaves no receive behind."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    layer = InMemoryChannelLayer()
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        # The interrupt is the event under test; it arrives while receive() blocks.
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyboardInterrupt):
            layer.sync.receive("replies")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    layer.sync.send("replies", {"type": "reply"})
    assert layer.sync.receive("replies", timeout=5) == {"type": "reply"}
    layer.sync.close()


def test_a_call_waiting_on_a_loop_that_stops_raises_layer_closed() -> None:
    """A blocked sync call does not hang when the loop it was queued on stops."""
    entered = threading.Event()

    class Noting(InMemoryChannelLayer):
        async def receive(self, channel: str) -> dict[str, Any]:
            entered.set()
            return await super().receive(channel)

    layer = Noting()
    loop = asyncio.new_event_loop()
    bound = threading.Event()

    async def bind() -> None:
        await layer.send("warm", {"type": "bind"})  # ties the layer to this loop
        bound.set()

    def serve() -> None:
        loop.run_until_complete(bind())
        loop.run_forever()

    thread = threading.Thread(target=serve)
    thread.start()
    assert bound.wait(5)
    outcome: list[BaseException] = []

    def blocked_receive() -> None:
        try:
            layer.sync.receive("nobody-sends-here")
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=blocked_receive)
    waiter.start()
    assert entered.wait(5)  # the receive runs on the loop before the loop stops
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    waiter.join(10)
    assert not waiter.is_alive()
    assert isinstance(outcome[0], LayerClosed)
    leftover = asyncio.all_tasks(loop)  # the abandoned receive: end it before closing
    for task in leftover:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
    loop.close()


def _use_in_child(layer: InMemoryChannelLayer, conn: Any) -> None:
    try:
        channel = layer.sync.new_channel()
        layer.sync.send(channel, {"type": "from-child"})
        conn.send(layer.sync.receive(channel, timeout=5)["type"])
    except BaseException as exc:  # reported to the parent, which fails the test
        conn.send(repr(exc))


def test_a_forked_child_gets_a_loop_of_its_own() -> None:
    """The background loop runs in the parent only; a forked child (a prefork worker) that
    inherited a layer bound to it must not forward its calls there (they waited forever)."""
    layer = InMemoryChannelLayer()
    channel = layer.sync.new_channel()
    layer.sync.send(channel, {"type": "from-parent"})
    assert layer.sync.receive(channel, timeout=5)["type"] == "from-parent"
    context = multiprocessing.get_context("fork")
    mine, theirs = context.Pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        child = context.Process(target=_use_in_child, args=(layer, theirs))
        child.start()
    try:
        assert mine.poll(30), "the forked child's calls did not return"
        assert mine.recv() == "from-child"
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    layer.sync.close()


def test_for_sync_puts_async_to_sync_calls_on_the_background_loop() -> None:
    """async_to_sync(layer.send) from a thread with no loop runs each call on a loop made
    for it; a layer made for_sync() lives on the shared background loop instead."""
    layer = InMemoryChannelLayer().for_sync()
    for n in range(3):
        async_to_sync(layer.send)("jobs", {"type": "n", "n": n})
    home = layer.bound_loop()
    assert home is not None and is_background_loop(home)
    assert [async_to_sync(layer.receive)("jobs")["n"] for _ in range(3)] == [0, 1, 2]
    assert layer.bound_loop() is home
    layer.sync.close()


def test_without_for_sync_each_async_to_sync_call_binds_the_layer_to_its_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    class Noting(InMemoryChannelLayer):
        async def send(self, channel: str, message: dict[str, Any]) -> None:
            await super().send(channel, message)
            loops.append(asyncio.get_running_loop())
            assert self.bound_loop() is loops[-1]  # the state lives on the caller's loop

    layer = Noting()
    for n in range(2):
        async_to_sync(layer.send)("jobs", {"type": "n", "n": n})
    assert loops[0] is not loops[1] and not any(map(is_background_loop, loops))
    assert layer.bound_loop() is None  # each loop ended with its call
    assert [async_to_sync(layer.receive)("jobs")["n"] for _ in range(2)] == [0, 1]


def test_for_sync_leaves_a_layer_on_the_loop_that_holds_it() -> None:
    """A server's loop that already holds the layer stays its home: calls from elsewhere
    are forwarded there, even after for_sync()."""
    layer = InMemoryChannelLayer()
    home = asyncio.new_event_loop()
    thread = threading.Thread(target=home.run_forever)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(layer.flush(), home).result(10)  # binds it there
        layer.for_sync()
        async_to_sync(layer.send)("jobs", {"type": "held"})
        assert layer.bound_loop() is home
        assert layer.sync.receive("jobs", timeout=5) == {"type": "held"}
        asyncio.run_coroutine_threadsafe(layer.close(), home).result(10)
    finally:
        home.call_soon_threadsafe(home.stop)
        thread.join(10)
        home.close()
