"""The synchronous facade: one background loop for the whole process, not one per call."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

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
