"""A Python child process for the tests (``kanal serve``, ``kanal worker``...), its log read
line by line as it runs, so a test waits for a line instead of sleeping."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class ChildProcess:
    """A running child: its stderr lines in :attr:`log`, read by a task until it ends."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log: list[str] = []
        self._seen = 0  # lines that wait_for has looked at
        self._more = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    async def _read(self) -> None:
        assert self.process.stderr is not None
        try:
            while line := await self.process.stderr.readline():
                self.log.append(line.decode(errors="replace").rstrip())
                self._more.set()
        finally:
            self._more.set()  # the end wakes a waiter too

    async def wait_for(self, pattern: str, within: float = 30) -> re.Match[str]:
        """The next log line (after those already looked at) that ``pattern`` matches."""
        regex = re.compile(pattern)
        async with asyncio.timeout(within):
            while True:
                while self._seen < len(self.log):
                    self._seen += 1
                    if found := regex.search(self.log[self._seen - 1]):
                        return found
                if self._reader.done():
                    raise AssertionError(
                        f"the process ended ({await self.process.wait()}) before {pattern!r}:\n"
                        + "\n".join(self.log)
                    )
                self._more.clear()
                await self._more.wait()

    async def stop(self, sig: int = signal.SIGTERM, within: float = 30) -> int:
        """Send ``sig`` unless the child has ended; its exit code once it has, log read."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        try:
            async with asyncio.timeout(within):
                code = await self.process.wait()
                await self._reader
        except TimeoutError:
            # What it logged says where it hung; the caller's cleanup kills it.
            raise AssertionError(
                f"pid {self.pid} did not end within {within} s of {signal.Signals(sig).name}:\n"
                + "\n".join(self.log[-40:])
            ) from None
        return code


@asynccontextmanager
async def child_process(
    *argv: str,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    path: tuple[Path, ...] = (),
    pass_fds: tuple[int, ...] = (),
    new_session: bool = False,
) -> AsyncIterator[ChildProcess]:
    """``python argv...`` with unbuffered output, from ``cwd``; ``env`` adds variables.

    ``path`` and the repository go first on its ``PYTHONPATH``; ``new_session`` makes it the
    leader of a process group of its own (its children join it), for signals sent to the
    whole group; a child still running at the end is killed.
    """
    entries = [*map(str, path), str(ROOT), os.environ.get("PYTHONPATH", "")]
    python_path = os.pathsep.join(entry for entry in entries if entry)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path, **(env or {})}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        cwd=cwd,
        env=full_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=pass_fds,
        start_new_session=new_session,
    )
    child = ChildProcess(process)
    try:
        yield child
    finally:
        await child.stop(signal.SIGKILL)
