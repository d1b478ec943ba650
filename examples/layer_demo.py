"""A tour of the channel layer: channels, groups, capacity, and the counters behind them.

Run it with ``python examples/layer_demo.py`` (``KANAL_LAYER`` picks the layer).
"""

from __future__ import annotations

import asyncio

from kanal.exceptions import ChannelFull
from kanal.layers import get_channel_layer


async def member(name: str, channel: str, count: int) -> None:
    layer = get_channel_layer()
    for _ in range(count):
        message = await layer.receive(channel)
        print(f"  {name:<6} got {message['type']}: {message['text']}")


async def main() -> None:
    layer = get_channel_layer()
    print(f"layer: {layer!r}")
    alice, bob = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room.lobby", alice)
    await layer.group_add("room.lobby", bob)
    listeners = [
        asyncio.create_task(member("alice", alice, 2)),
        asyncio.create_task(member("bob", bob, 1)),
    ]
    await layer.group_send("room.lobby", {"type": "chat.message", "text": "hello, lobby"})
    await layer.send(alice, {"type": "chat.private", "text": "just for alice"})
    await asyncio.gather(*listeners)

    print("filling a channel of capacity 100 ...")
    try:
        for i in range(101):
            await layer.send("jobs", {"type": "job", "text": str(i)})
    except ChannelFull as exc:
        print(f"  ChannelFull: {exc}")
    stats = layer.stats()
    print(f"stats: sent={stats.sent} received={stats.received} dropped={stats.dropped}")
    await layer.close()


if __name__ == "__main__":
    asyncio.run(main())
