"""Running the Django chat example (``examples/django_chat``) in real processes for tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "django_chat"
USERS = {"alice": "alice-password", "bob": "bob-password"}

# Imported by every Python process of the example: Channels and Daphne cannot be imported
# there, so the example proves it needs neither (they are installed for other tests).
_BLOCKER = """
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("channels", "daphne"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def example_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of the example's processes: its own database, no Channels."""
    blocker = tmp / "no-channels"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(_BLOCKER)
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(blocker), str(EXAMPLE)]),
        DJANGO_SETTINGS_MODULE="mysite.settings",
        DJANGO_CHAT_DB=str(tmp / "chat.sqlite3"),
        PYTHONUNBUFFERED="1",
        **extra,
    )


def prepare_database(env: Mapping[str, str]) -> None:
    """``migrate``, then the users of :data:`USERS`."""
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=EXAMPLE, env=env, check=True, timeout=60)
    create = "; ".join(
        f"User.objects.create_user({name!r}, password={password!r})"
        for name, password in USERS.items()
    )
    subprocess.run(
        [*manage, "shell", "-c", f"from django.contrib.auth.models import User; {create}"],
        cwd=EXAMPLE,
        env=env,
        check=True,
        timeout=60,
    )


@asynccontextmanager
async def example_process(
    args: list[str], env: Mapping[str, str], ready: str
) -> AsyncIterator[Running]:
    """Start ``args`` in the example's directory; yield once stderr has a line with ``ready``.

    The process gets a session of its own, and the whole session is ended at exit: Django's
    autoreloader runs the server in a child process.
    """
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=EXAMPLE,
        env=dict(env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stderr is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            while ready not in (line := (await process.stderr.readline()).decode()):
                if not line:
                    raise AssertionError(
                        f"{args} exited with {await process.wait()}:\n{''.join(seen)}"
                    )
                seen.append(line)
        running = Running(process)
        drain = asyncio.create_task(_drain(process.stderr, running.lines))
        yield running
        drain.cancel()
    finally:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await process.wait()
            except TimeoutError:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


class Running:
    """A started process, and the lines its stderr has written since it was ready."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.lines: asyncio.Queue[str] = asyncio.Queue()

    async def wait_for_line(self, marker: str) -> str:
        """The next stderr line that contains ``marker`` (within 30 s)."""
        async with asyncio.timeout(30):
            while marker not in (line := await self.lines.get()):
                pass
        return line


async def _drain(stream: asyncio.StreamReader, lines: asyncio.Queue[str]) -> None:
    # Always read: a server whose stderr pipe fills up would block on its next log line.
    while line := await stream.readline():
        lines.put_nowait(line.decode(errors="replace"))
