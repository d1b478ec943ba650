"""``kanal`` commands as real subprocesses for the tests, with their logs collected."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Process:
    """A ``kanal`` subprocess whose log is collected as it runs."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def wait_for(self, text: str) -> None:
        """Read the log until a line holds ``text``; then keep collecting it."""
        assert self.process.stderr is not None
        async with asyncio.timeout(15):
            while True:
                line = await self.process.stderr.readline()
                if not line:
                    raise AssertionError(
                        f"process exited ({await self.process.wait()}):\n" + "\n".join(self.log)
                    )
                self.log.append(line.decode(errors="replace").rstrip())
                if text in self.log[-1]:
                    break
        self._reader = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.log.append(line.decode(errors="replace").rstrip())

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` (unless it exited) and wait for the exit; its code."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        async with asyncio.timeout(20):
            code = await self.process.wait()
            if self._reader is not None:
                await self._reader
        return code


@asynccontextmanager
async def kanal(
    layer_url: str, *args: str, ready: str, path: Sequence[Path] = ()
) -> AsyncIterator[Process]:
    """``kanal ARGS`` on ``layer_url`` (with ``path`` importable, and the repository),
    once its log says ``ready``; killed at the end if it still runs."""
    env = dict(
        os.environ,
        KANAL_LAYER=layer_url,
        PYTHONPATH=os.pathsep.join([*map(str, path), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        PYTHONUNBUFFERED="1",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from kanal.cli import main; sys.exit(main())",
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    wrapped = Process(process)
    try:
        await wrapped.wait_for(ready)
        yield wrapped
    finally:
        await wrapped.stop(signal.SIGKILL if process.returncode is None else signal.SIGTERM)
