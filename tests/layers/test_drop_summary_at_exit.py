"""Drops held back by the rate limit are written when the process exits."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, logging
    from kanal.layers import InMemoryChannelLayer

    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    async def main():
        layer = InMemoryChannelLayer(capacity=1)
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        for _ in range(4):  # the first fills the channel, then three drops
            await layer.group_send("room", {"type": "x"})
        # No close(): a server stopped by a signal does not close its layer either.

    asyncio.run(main())
    """
)


def test_held_back_drops_are_summarised_at_exit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any("dropped a message" in line for line in lines), lines
    assert any("dropped 2 more message(s) for full channels" in line for line in lines), lines
