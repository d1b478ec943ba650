"""One Redis layer instance used from several event loops in turn leaks nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from kanal.testing import RedisServer

pytestmark = pytest.mark.redis

SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, sys
    from kanal.layers.redis import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[sys.argv[1]], prefix="loops")

    async def use(i):
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "t", "i": i})
        assert (await layer.receive(channel))["i"] == i
        await layer.group_add("g", channel)
        await layer.group_send("g", {"type": "g"})
        await layer.receive(channel)
        await layer.send("named", {"type": "n"})
        await layer.receive("named")
        await layer.group_discard("g", channel)

    for i in range(3):  # as async_to_sync and test suites do: a new loop each time
        asyncio.run(use(i))
        gc.collect()

    async def end():
        await layer.close()

    asyncio.run(end())
    gc.collect()
    print("done")
    """
)


def test_one_layer_over_successive_loops_leaks_nothing_under_w_error(
    redis_server: RedisServer,
) -> None:
    """Every loop's connections, transports and tasks are closed as it ends: with
    ``-W error -X dev`` an unclosed one would print a ResourceWarning (or fail)."""
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", SCRIPT, redis_server.url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
    for sign in ("ResourceWarning", "unclosed", "Task was destroyed", "Traceback"):
        assert sign not in done.stderr, done.stderr
