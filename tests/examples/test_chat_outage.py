"""The chat on Redis while redis-server is SIGKILLed and restarted: nobody is disconnected."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from redis.asyncio import Redis
from tests.examples.test_chat_processes import chat_process

from kanal.testing import RedisServer

pytestmark = pytest.mark.redis

CLIENTS = 30


class Client:
    """One chat client: every event it gets, and a way to wait for one."""

    def __init__(self, ws: websockets.ClientConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            async with self.changed:
                self.events.append(json.loads(raw))
                self.changed.notify_all()

    def texts(self) -> set[str]:
        return {event["text"] for event in self.events if event["kind"] == "message"}

    def left(self) -> set[str]:
        # A notice names one person, or several gathered in one window ("names").
        leaves = [event for event in self.events if event["kind"] == "leave"]
        return {name for event in leaves for name in event.get("names", [event.get("name")])}

    async def until(self, check: Any) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: check(self) or self.reader.done())
        assert check(self), (self.name, self.ws.close_code, self.events[-5:])


async def _join(port: int, name: str) -> Client:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/chat/lobby/?name={name}", origin=f"http://127.0.0.1:{port}"
    )
    assert json.loads(await ws.recv())["kind"] == "welcome"
    return Client(ws, name)


async def check_nobody_missed_anything(
    senders: list[Client], leavers: list[Client], staying: list[Client]
) -> list[Client]:
    """After an outage in which ``senders`` each sent a line and ``leavers`` left: every
    line and every leave reached everyone still there, lines sent now reach them all, and
    nobody was closed or told the layer was unavailable. Returns who is still there."""
    during = {f"during {client.name}" for client in senders}
    remaining = [*senders, *staying]
    async with asyncio.timeout(60):
        for client in remaining:
            await client.until(lambda c: during <= c.texts())
            await client.until(lambda c: {x.name for x in leavers} <= c.left())
    for client in remaining:
        await client.ws.send(json.dumps({"text": f"after {client.name}"}))
    after = {f"after {client.name}" for client in remaining}
    async with asyncio.timeout(60):
        for client in remaining:
            await client.until(lambda c: after <= c.texts())
    assert all(not client.reader.done() for client in remaining)
    assert all(client.ws.close_code is None for client in remaining)
    assert not any(e["kind"] == "unavailable" for c in remaining for e in c.events)
    return remaining


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to kill and restart."""
    with RedisServer() as server:
        yield server


async def test_redis_killed_and_restarted_under_the_chat_closes_no_connection(
    private_redis: RedisServer,
) -> None:
    """30 clients; Redis killed; 10 of them send a line and 3 others leave during the
    outage; Redis restarted: every line reaches every client still there, nobody was
    closed, the room's membership in Redis is the server's one, and
    lines sent afterwards reach them all."""
    # A bound well above the outage, so that a loaded machine does not turn it into a
    # failure; the outage itself (kill, the lines held, restart) lasts about a second.
    url = private_redis.url + "?outage_timeout=30"
    async with chat_process(url) as port:
        # Each welcome comes after its client joined the room: all are members in Redis.
        clients = [await _join(port, f"c{i}") for i in range(CLIENTS)]
        names = {client.name for client in clients}
        senders, leavers, staying = clients[:10], clients[10:13], clients[13:]
        await asyncio.to_thread(private_redis.kill)
        for client in senders:
            await client.ws.send(json.dumps({"text": f"during {client.name}"}))
        for client in leavers:
            await client.ws.close()
        await asyncio.to_thread(private_redis.restart)
        remaining = await check_nobody_missed_anything(senders, leavers, staying)
        raw = Redis.from_url(private_redis.url)
        try:
            members = await raw.zcard("asgi:g:chat.lobby")
        finally:
            await raw.aclose()
        # The room is delivered directly by the server: its process holds the one
        # membership, shared by every local subscriber (docs/direct.md).
        assert members == 1
        assert names - {c.name for c in remaining} == {c.name for c in leavers}
        for client in remaining:
            await client.ws.close()
