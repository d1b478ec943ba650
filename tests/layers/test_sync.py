"""The synchronous facade: one background loop for the whole process, not one per call."""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any

import pytest

from kanal.layers import InMemoryChannelLayer


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
