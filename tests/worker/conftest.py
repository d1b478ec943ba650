"""Fixtures of the worker tests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest


class LogRecords(logging.Handler):
    """The records a logger writes, kept in a list and queued for a test to wait on."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._queue: asyncio.Queue[logging.LogRecord] = asyncio.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._queue.put_nowait(record)

    async def wait_for(self, text: str = "", level: int = logging.INFO) -> logging.LogRecord:
        """The next record at ``level`` or above whose message holds ``text``."""
        async with asyncio.timeout(5):
            while True:
                record = await self._queue.get()
                if record.levelno >= level and text in record.getMessage():
                    return record


@pytest.fixture
def worker_log() -> Iterator[LogRecords]:
    """What the ``kanal.worker`` loggers (the scheduler's too) write at INFO and above."""
    log = logging.getLogger("kanal.worker")
    handler = LogRecords()
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
