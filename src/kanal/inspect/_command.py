"""``kanal inspect``: the command's loop (samples, then the table, JSON or a live view).

The view needs ``rich`` (the ``inspect`` extra), imported only when it draws: ``--json``
works on a plain install.
"""

from __future__ import annotations

import asyncio
import json
import sys
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from kanal.exceptions import ConfigError, KanalError
from kanal.inspect._gather import Inspector, is_endpoint, nothing_attached

__all__ = ["inspect", "without_password"]


def inspect(url: str, *, once: bool, as_json: bool, interval: float, wait: float) -> int:
    """Run ``kanal inspect`` on ``url``: its exit code (1: ``once`` and nobody answered)."""
    if not is_endpoint(url) and urlsplit(url).scheme == "memory":
        raise ConfigError(
            "a memory:// layer is one process's own: inspect the server on it through its "
            "metrics listener instead (kanal serve --metrics PORT, then kanal inspect "
            "http://127.0.0.1:PORT)"
        )
    if interval <= 0 or wait <= 0:
        raise ConfigError("--interval and --wait must be positive")
    shown = without_password(url)
    view: ModuleType | None = None
    if not as_json:
        try:
            from kanal.inspect import _view as view
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"kanal inspect's view needs the inspect extra: pip install 'kanal[inspect]' "
                f"(no module named {exc.name!r}); or use --json"
            ) from exc

    async def sample_twice(inspector: Inspector) -> list[dict[str, Any]]:
        # Two samples: the second's rates are over the interval between them.
        await inspector.sample()
        await asyncio.sleep(interval)
        return await inspector.sample()

    async def run() -> int:
        inspector = Inspector(url, wait=wait)
        try:
            if once:
                found = await sample_twice(inspector)
                if as_json:
                    print(json.dumps({"url": shown, "processes": found}, indent=2))
                    if not found:
                        print(nothing_attached(shown), file=sys.stderr)
                else:
                    assert view is not None
                    from rich.console import Console

                    # Piped, the table keeps its columns rather than wrapping at 80.
                    console = Console(width=None if sys.stdout.isatty() else 160)
                    console.print(view.render(shown, found))
                return 0 if found else 1
            if as_json:  # one JSON object per line, each sample
                while True:
                    found = await inspector.sample()
                    print(json.dumps({"url": shown, "processes": found}), flush=True)
                    await asyncio.sleep(interval)
            assert view is not None
            from rich.live import Live
            from rich.text import Text

            async def frame() -> Any:
                # Live, a failed sample (Redis away, a listener restarting) is shown and
                # tried again at the next interval instead of ending the view.
                try:
                    return view.render(shown, await inspector.sample())
                except KanalError as exc:
                    return Text(f"kanal inspect {shown}: {exc}; trying again", style="bold red")

            with Live(await frame(), auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(interval)
                    live.update(await frame(), refresh=True)
        finally:
            await inspector.close()

    return asyncio.run(run())


def without_password(url: str) -> str:
    """``url`` to show: its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
