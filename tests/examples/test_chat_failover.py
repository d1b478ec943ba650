"""The chat on a Sentinel-watched Redis whose master is SIGKILLed: Sentinel promotes the
replica, and nobody is disconnected or misses a line."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis
from tests.examples.test_chat_outage import _join, check_nobody_missed_anything
from tests.examples.test_chat_processes import chat_process

from kanal.testing._redis_topologies import RedisSentinel

pytestmark = pytest.mark.redis

CLIENTS = 20


async def test_sentinel_failover_under_the_chat_closes_no_connection() -> None:
    """20 clients; the master killed; 5 send a line and 2 leave before Sentinel has
    promoted the replica; afterwards every line reached every client still there, nobody
    was closed, the room's membership is on the new master and nobody who left is in it."""
    with RedisSentinel() as topology:
        sentinel = topology.sentinel
        # A bound well above a failover (down after 0.5 s, then the election), so that a
        # loaded machine does not turn it into a failure.
        url = (
            f"redis+sentinel://{sentinel.host}:{sentinel.port}/{topology.master_name}/0"
            "?outage_timeout=30"
        )
        async with chat_process(url) as port:
            # Each welcome comes after its client joined the room: all are members.
            clients = [await _join(port, f"c{i}") for i in range(CLIENTS)]
            senders, leavers, staying = clients[:5], clients[5:7], clients[7:]
            await asyncio.to_thread(topology.master.kill)
            for client in senders:
                await client.ws.send(json.dumps({"text": f"during {client.name}"}))
            for client in leavers:
                await client.ws.close()
            await asyncio.to_thread(sentinel.wait_for_log, "+switch-master", 30)
            remaining = await check_nobody_missed_anything(senders, leavers, staying)
            promoted = Redis(host=topology.replica.host, port=topology.replica.port)
            try:
                assert (await promoted.execute_command("ROLE"))[0] == b"master"
                # Direct delivery: the server process holds the room's one membership.
                assert await promoted.zcard("asgi:g:chat.lobby") == 1
            finally:
                await promoted.aclose()
            for client in remaining:
                await client.ws.close()
