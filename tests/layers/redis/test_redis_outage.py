"""The outage bound, done for real: redis-server SIGKILLed and restarted under the layer.

Commands that could not reach Redis wait (in order) for up to ``outage_timeout`` and then
go through; past the bound they fail, counted as dropped (reason ``unavailable``) and
logged; a connection that died while idle is replaced before it fails a caller; joins and
leaves that failed are done once Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from kanal.exceptions import LayerUnavailable
from kanal.layers.redis import RedisChannelLayer
from kanal.testing import RedisServer

pytestmark = pytest.mark.redis


async def _killed(server: RedisServer) -> None:
    await asyncio.to_thread(server.kill)


async def _restarted(server: RedisServer) -> None:
    await asyncio.to_thread(server.restart)


class _Holding(logging.Handler):
    """Sets ``event`` when the layer logs that it holds commands (an outage began)."""

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "holding commands" in record.getMessage():
            self.event.set()


@pytest.fixture
def holding() -> Iterator[asyncio.Event]:
    handler = _Holding()
    log = logging.getLogger("kanal.layers.redis")
    log.addHandler(handler)
    yield handler.event
    log.removeHandler(handler)


async def test_sends_during_a_short_outage_wait_and_go_through_in_order(
    private_redis: RedisServer, holding: asyncio.Event
) -> None:
    """Redis killed, sends issued, Redis restarted: every send returns, none raises, the
    receiver gets them all in the order they were sent, and nothing is counted lost."""
    url = private_redis.url
    sender = RedisChannelLayer(hosts=[url], outage_timeout=30)
    receiver = RedisChannelLayer(hosts=[url])
    channel = await receiver.new_channel()
    await sender.send(channel, {"type": "t", "n": 0})  # the connections exist
    assert (await receiver.receive(channel))["n"] == 0
    await _killed(private_redis)

    async def send_all() -> None:
        for n in range(1, 21):
            await sender.send(channel, {"type": "t", "n": n})

    async def group_send_all() -> None:
        for n in range(1, 6):
            await sender.group_send("room", {"type": "g", "n": n})

    sending = asyncio.gather(send_all(), group_send_all())
    # The first send is held (Redis is down), not failed.
    async with asyncio.timeout(10):
        await holding.wait()
    assert not sending.done()
    await _restarted(private_redis)
    async with asyncio.timeout(30):
        await sending
    async with asyncio.timeout(30):
        got = [(await receiver.receive(channel))["n"] for _ in range(20)]
    assert got == list(range(1, 21))
    stats = sender.stats()
    assert stats.dropped == 0 and stats.unavailable == 0
    assert sender.unavailable_errors == 0
    await sender.close()
    await receiver.close()


async def test_a_held_group_send_finds_the_members_redis_lost(
    private_redis: RedisServer, holding: asyncio.Event
) -> None:
    """In one process (a chat server): the members the restarted Redis forgot are added
    again before the group_send that waited for it, so it reaches them."""
    layer = RedisChannelLayer(hosts=[private_redis.url], outage_timeout=30)
    members = [await layer.new_channel() for _ in range(3)]
    for channel in members:
        await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "g", "n": 0})
    for channel in members:
        assert (await layer.receive(channel))["n"] == 0
    await _killed(private_redis)
    sending = asyncio.ensure_future(layer.group_send("room", {"type": "g", "n": 1}))
    async with asyncio.timeout(10):
        await holding.wait()
    await _restarted(private_redis)
    async with asyncio.timeout(30):
        await sending
        for channel in members:
            assert (await layer.receive(channel))["n"] == 1
    assert layer.stats().dropped == 0
    await layer.close()


async def test_an_outage_past_the_bound_fails_counted_and_logged(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Past outage_timeout, a send and a group send raise LayerUnavailable; each is
    counted as dropped with the reason ``unavailable`` (totals, channel, group) and
    logged; the layer works again once Redis is back."""
    caplog.set_level(logging.WARNING)
    layer = RedisChannelLayer(hosts=[private_redis.url], outage_timeout=0.3)
    await layer.send("jobs", {"type": "job"})
    await _killed(private_redis)
    async with asyncio.timeout(20):
        with pytest.raises(LayerUnavailable):
            await layer.send("jobs", {"type": "job"})
        with pytest.raises(LayerUnavailable):
            await layer.group_send("room", {"type": "g"})
    stats = layer.stats()
    assert (stats.dropped, stats.unavailable) == (2, 2)
    assert (stats.channels["jobs"].dropped, stats.channels["jobs"].unavailable) == (1, 1)
    assert (stats.groups["room"].dropped, stats.groups["room"].unavailable) == (1, 1)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "send to 'jobs' dropped a message: the layer is unavailable" in text
    assert "holding commands for up to 0.3 s" in text
    layer._drops.close()  # the rate-limited second drop is summarised
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "1 more message(s) with the layer unavailable" in text
    await _restarted(private_redis)
    async with asyncio.timeout(20):
        await layer.send("jobs", {"type": "job"})
        assert (await layer.receive("jobs"))["type"] == "job"
    await layer.close()


async def test_a_connection_that_died_while_idle_does_not_fail_its_next_caller(
    private_redis: RedisServer,
) -> None:
    """Redis restarted between two sends: the kept connection is dead, and the send is
    made on a new one rather than failing (even with no outage wait at all)."""
    layer = RedisChannelLayer(hosts=[private_redis.url], outage_timeout=0)
    await layer.send("jobs", {"type": "job", "n": 1})
    await _restarted(private_redis)
    batcher = layer._shards.all[0].batcher  # type: ignore[union-attr]
    async with asyncio.timeout(20):
        await layer.send("jobs", {"type": "job", "n": 2})
        assert (await layer.receive("jobs"))["n"] == 2
    assert batcher.stale_retries >= 1
    await layer.close()


async def test_a_leave_that_failed_in_an_outage_is_done_when_redis_is_back() -> None:
    """A group_discard that failed (Redis down past the bound) is sent again once Redis
    answers: with a Redis that kept its data, no stale member stays until group_expiry."""
    with RedisServer(args=["--appendonly", "yes", "--appendfsync", "always"]) as server:
        layer = RedisChannelLayer(hosts=[server.url], outage_timeout=0.2)
        stays, leaves = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("room", stays)
        await layer.group_add("room", leaves)
        await _killed(server)
        async with asyncio.timeout(20):
            with pytest.raises(LayerUnavailable):
                await layer.group_discard("room", leaves)
        await _restarted(server)
        raw = Redis.from_url(server.url)
        try:
            assert await raw.zscore("asgi:g:room", leaves) is not None  # Redis kept it
            async with asyncio.timeout(20):
                # The next command through the layer does what failed, first.
                await layer.group_send("room", {"type": "g"})
                assert (await layer.receive(stays))["type"] == "g"
            assert await raw.zscore("asgi:g:room", leaves) is None
            assert await raw.zscore("asgi:g:room", stays) is not None
            assert layer.receive_nowait(leaves) is None
        finally:
            await raw.aclose()
            await layer.close()
