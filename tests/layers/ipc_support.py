"""What the ipc:// layer's tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kanal.layers.ipc import IpcChannelLayer


class Frames:
    """The frames other processes send to ``layer``, watched from the moment it is made."""

    def __init__(self, layer: IpcChannelLayer) -> None:
        self.seen: list[list[Any]] = []
        self._arrived = asyncio.Event()
        original = layer._on_frame

        def on_frame(link: Any, frame: list[Any]) -> None:
            original(link, frame)
            self.seen.append(frame)
            self._arrived.set()

        # Connections are made on first use and take the handler then.
        layer._on_frame = on_frame  # type: ignore[method-assign]

    async def until(self, condition: Callable[[], bool], within: float = 10) -> None:
        """Wait until ``condition()`` holds, looking again after each frame."""
        async with asyncio.timeout(within):
            while not condition():
                self._arrived.clear()
                await self._arrived.wait()

    def count(self, kind: int) -> int:
        """How many frames of ``kind`` arrived."""
        return sum(1 for frame in self.seen if frame[0] == kind)
