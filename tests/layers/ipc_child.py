"""A process of an ipc:// layer for the multi-process tests; it reports on stderr.

``python tests/layers/ipc_child.py ROLE DIRECTORY OPTIONS_JSON`` where ROLE is

* ``member``: makes a channel, joins ``options["groups"]``, prints ``ready <channel>``,
  then ``got <message json>`` for every message;
* ``worker``: receives from the named channel ``options["channel"]`` and prints
  ``got <message json>`` for each (``ready`` once its first receive waits);
* ``idle``: makes a channel and a control channel, prints ``ready <channel> <control>``
  and receives nothing until a control message comes; then prints each message of its
  channel up to one of type ``marker``, then ``stats <json>`` (its counters), and waits
  for the next control message;
* ``busy``: a member of ``options["groups"]`` that also group-sends to them as fast as
  it can (``options["rate"]`` messages per loop round) and prints ``alive <n>`` now and
  then; the crash tests kill it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import sys
from typing import Any

from kanal.exceptions import ChannelFull
from kanal.layers.ipc import IpcChannelLayer


def say(*words: object) -> None:
    print(*words, file=sys.stderr, flush=True)


async def member(layer: IpcChannelLayer, options: dict[str, Any]) -> None:
    channel = await layer.new_channel()
    for group in options.get("groups", []):
        await layer.group_add(group, channel)
    say("ready", channel)
    while True:
        say("got", json.dumps(await layer.receive(channel)))


async def worker(layer: IpcChannelLayer, options: dict[str, Any]) -> None:
    name = options["channel"]
    first = asyncio.ensure_future(layer.receive(name))
    await asyncio.sleep(0)  # the receive has claimed its home by now
    say("ready", layer.token)
    message = await first
    while True:
        say("got", json.dumps(message))
        message = await layer.receive(name)


async def idle(layer: IpcChannelLayer, options: dict[str, Any]) -> None:
    channel = await layer.new_channel()
    control = await layer.new_channel()
    for group in options.get("groups", []):
        await layer.group_add(group, channel)
    say("ready", channel, control)
    while True:
        await layer.receive(control)
        while True:
            message = await layer.receive(channel)
            say("got", json.dumps(message))
            if message["type"] == "marker":
                break
        stats = layer.stats()
        say("stats", json.dumps({"expired": stats.expired, "received": stats.received}))


async def busy(layer: IpcChannelLayer, options: dict[str, Any]) -> None:
    channel = await layer.new_channel()
    groups = options["groups"]
    for group in groups:
        await layer.group_add(group, channel)
    say("ready", channel)
    rounds = 0

    async def drain() -> None:
        while True:
            await layer.receive(channel)

    draining = asyncio.ensure_future(drain())
    while not draining.done():
        for group in groups:
            for _ in range(options.get("rate", 5)):
                await layer.group_send(group, {"type": "busy", "from": channel})
        with contextlib.suppress(ChannelFull):  # nobody may be taking jobs just now
            await layer.send(options.get("queue", "fuzz-jobs"), {"type": "job", "from": channel})
        rounds += 1
        if rounds % 50 == 0:
            say("alive", rounds)
        await asyncio.sleep(0.001)
    await draining


async def locker(layer: IpcChannelLayer, options: dict[str, Any]) -> None:
    """Joins, then holds every lock of the layer's directory until it is killed: the
    database's write lock (a transaction left open) and the lock new processes join by."""
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    database = sqlite3.connect(layer.directory / "state.db", isolation_level=None)
    database.execute("BEGIN IMMEDIATE")
    database.execute("DELETE FROM members")  # uncommitted: nobody may see it
    registry = os.open(layer.directory / "registry.lock", os.O_RDWR)
    fcntl.flock(registry, fcntl.LOCK_EX)
    say("holding", channel)
    await asyncio.Event().wait()


ROLES = {"member": member, "worker": worker, "idle": idle, "busy": busy, "locker": locker}


async def main() -> None:
    role, directory, raw = sys.argv[1:4]
    options = json.loads(raw)
    layer = IpcChannelLayer(directory, **options.get("layer", {}))
    try:
        await ROLES[role](layer, options)
    finally:
        await layer.close()


if __name__ == "__main__":
    import uvloop  # the server's loop (the tests' own process runs asyncio's)

    uvloop.run(main())
