"""Faults done for real: redis-server SIGKILLed and restarted, unreachable, mass disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import pytest
from redis.asyncio import Redis

from kanal.exceptions import ChannelFull, LayerClosed, LayerUnavailable
from kanal.layers.redis import RedisChannelLayer
from kanal.testing import RedisServer, free_port

pytestmark = pytest.mark.redis


def _other_tasks() -> set[asyncio.Task[Any]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


async def test_redis_killed_and_restarted_while_in_use(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Senders and receivers ride through a SIGKILL + restart of Redis on their own.

    Sends during the outage raise LayerUnavailable (counted); once Redis is back, messages
    flow again, group memberships are restored without the application doing anything, and
    closing leaves no task behind.
    """
    caplog.set_level(logging.WARNING, logger="kanal.layers.redis")
    before = _other_tasks()
    receiver = RedisChannelLayer(hosts=[private_redis.url], timeout=1.0)
    sender = RedisChannelLayer(hosts=[private_redis.url], timeout=1.0)
    channel = await receiver.new_channel()
    await receiver.group_add("room", channel)
    received: list[int] = []
    sent: list[int] = []
    failed: list[int] = []
    warmed_up = asyncio.Event()
    outage_seen = asyncio.Event()
    after_restart = asyncio.Event()
    group_back = asyncio.Event()
    restarted_at: list[int] = []
    # The loops also stop on this flag: on Python 3.11 a cancellation that meets a
    # client-side timeout can surface as LayerUnavailable, which they catch.
    stopping = asyncio.Event()

    async def receive_forever() -> None:
        while True:
            seq = (await receiver.receive(channel))["seq"]
            received.append(seq)
            if len(received) >= 50:
                warmed_up.set()
            if seq == -1:
                group_back.set()
            elif restarted_at and seq > restarted_at[0]:
                after_restart.set()

    async def send_forever() -> None:
        seq = 0
        while not stopping.is_set():
            seq += 1
            try:
                await sender.send(channel, {"type": "tick", "seq": seq})
            except LayerUnavailable:
                failed.append(seq)
                outage_seen.set()
            except ChannelFull:
                # Refused loudly too: the receiver fell behind while its drain reconnected.
                pass
            else:
                sent.append(seq)
            await asyncio.sleep(0.002)  # a steady trickle, like a real producer

    receiving = asyncio.create_task(receive_forever())
    sending = asyncio.create_task(send_forever())
    async with asyncio.timeout(10):
        await warmed_up.wait()
    await asyncio.to_thread(private_redis.kill)
    async with asyncio.timeout(30):
        await outage_seen.wait()  # the outage is visible to the sender, as an error
    await asyncio.to_thread(private_redis.restart)
    restarted_at.append(max(failed))
    async with asyncio.timeout(40):
        await after_restart.wait()

    # Group membership comes back by itself (the restarted Redis had lost it): keep
    # broadcasting until the member gets one.
    async def broadcast() -> None:
        while not stopping.is_set():
            with contextlib.suppress(LayerUnavailable):
                await sender.group_send("room", {"type": "tick", "seq": -1})
            await asyncio.sleep(0.05)

    broadcasting = asyncio.create_task(broadcast())
    # Bounds, not waits: generous so that a loaded machine does not fail the test.
    async with asyncio.timeout(30):
        await group_back.wait()
    broadcasting.cancel()

    stopping.set()
    sending.cancel()
    receiving.cancel()
    async with asyncio.timeout(10):
        await asyncio.gather(sending, receiving, broadcasting, return_exceptions=True)
    # Every message either failed loudly, arrived, or was in Redis when it died: the
    # last kind is at most the handful sent between the kill and the first failure.
    lost = [seq for seq in sent if seq not in set(received)]
    assert len(lost) <= 5, lost
    assert sender.unavailable_errors >= len(failed) > 0
    assert receiver._receiver.restarts_detected >= 1
    assert any("lost its data" in r.getMessage() for r in caplog.records)
    await receiver.close()
    await sender.close()
    assert _other_tasks() <= before


async def test_unreachable_redis_raises_layer_unavailable_quickly() -> None:
    """Nothing listening: send fails with LayerUnavailable, it does not hang."""
    layer = RedisChannelLayer(hosts=[f"redis://127.0.0.1:{free_port()}/0"], timeout=0.5)
    try:
        async with asyncio.timeout(10):  # a hang fails the test here
            with pytest.raises(LayerUnavailable) as info:
                await layer.send("jobs", {"type": "job"})
        assert "127.0.0.1" in str(info.value)
        assert isinstance(info.value, ConnectionError)
        async with asyncio.timeout(10):
            with pytest.raises(LayerUnavailable):
                await layer.group_send("room", {"type": "x"})
        assert layer.unavailable_errors == 2
    finally:
        await layer.close()


async def test_silent_redis_raises_layer_unavailable_within_timeout() -> None:
    """A server that accepts connections but never answers: LayerUnavailable after timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(100)  # the kernel completes handshakes; nobody ever reads or writes
        port = silent.getsockname()[1]
        layer = RedisChannelLayer(hosts=[f"redis://127.0.0.1:{port}/0"], timeout=0.3)
        try:
            async with asyncio.timeout(10):
                with pytest.raises(LayerUnavailable) as info:
                    await layer.send("jobs", {"type": "job"})
            assert f"127.0.0.1:{port}" in str(info.value)
            assert "within 0.3 s" in str(info.value)
        finally:
            await layer.close()


async def test_500_clients_disconnecting_at_once(redis_server: RedisServer) -> None:
    """500 concurrent group_discard calls: no pool exhaustion, no member left behind."""
    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="mass")
    raw = Redis.from_url(redis_server.url)
    try:
        await layer.flush()
        channels = [await layer.new_channel() for _ in range(500)]
        await asyncio.gather(*(layer.group_add("lobby", name) for name in channels))
        assert await raw.zcard("mass:g:lobby") == 500
        clients_before = len(await raw.client_list())
        async with asyncio.timeout(30):
            await asyncio.gather(*(layer.group_discard("lobby", name) for name in channels))
        assert await raw.zcard("mass:g:lobby") == 0
        # The burst went out pipelined: it did not open a connection per caller.
        assert len(await raw.client_list()) <= clients_before + 2
        await layer.group_send("lobby", {"type": "to-nobody"})
        assert layer.stats().groups["lobby"].delivered == 0
    finally:
        await layer.flush()
        await layer.close()
        await raw.aclose()


async def test_unexpected_error_in_the_drain_is_logged_and_receiving_goes_on(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drain that meets an error nobody expected retries: a waiting receive is not stranded.

    (redis-py can raise, say, AttributeError on a connection closed under it; a drain task
    that died of it left every receiver of the process waiting for good.)
    """
    from kanal.layers.redis import _connection

    original = _connection.Wire.run
    drains: list[int] = []
    receiver_waits = asyncio.Event()

    async def flaky(self: Any, commands: Any) -> list[Any]:
        if commands[0][0] == "BLMPOP":
            drains.append(1)
            if len(drains) == 2:  # the drain's second wait, once a receiver waits
                await receiver_waits.wait()
                raise AttributeError("'NoneType' object has no attribute 'read'")
        return await original(self, commands)

    monkeypatch.setattr(_connection.Wire, "run", flaky)
    caplog.set_level(logging.ERROR, logger="kanal.layers.redis")
    receiver = RedisChannelLayer(hosts=[redis_server.url])
    sender = RedisChannelLayer(hosts=[redis_server.url])
    try:
        channel = await receiver.new_channel()
        await sender.send(channel, {"type": "first"})
        async with asyncio.timeout(10):
            assert await receiver.receive(channel) == {"type": "first"}
        waiting = asyncio.create_task(receiver.receive(channel))
        await asyncio.sleep(0)  # the task starts and waits for a message
        receiver_waits.set()
        await sender.send(channel, {"type": "second"})
        async with asyncio.timeout(10):
            assert await waiting == {"type": "second"}
        assert len(drains) >= 3
        assert "failed unexpectedly; retrying" in caplog.text
    finally:
        await receiver.close()
        await sender.close()


async def test_a_malformed_inbox_record_is_skipped_alone(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A record the layer did not write is logged and skipped; the next one still arrives."""
    import time

    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="malformed")
    raw = Redis.from_url(redis_server.url)
    try:
        channel = await layer.new_channel()
        inbox = f"malformed:in:{layer._process}"
        deadline = int(time.time() * 1000) + 60_000
        good = b"%d %s\n" % (deadline, channel.encode()) + layer.codec.encode({"type": "ok"})
        with caplog.at_level(logging.ERROR, logger="kanal.layers.redis"):
            async with raw.pipeline(transaction=True) as pipe:  # one BLMPOP takes both
                pipe.rpush(inbox, b"not-a-deadline x\n")
                pipe.rpush(inbox, good)
                await pipe.execute()
            async with asyncio.timeout(10):
                assert await layer.receive(channel) == {"type": "ok"}
        assert "skipped a malformed record" in caplog.text
    finally:
        await layer.flush()
        await layer.close()
        await raw.aclose()


async def _senders_racing_close(url: str, round_: int) -> None:
    layer = RedisChannelLayer(hosts=[url], prefix=f"race{round_}", capacity=1_000_000)
    sent = 0
    busy = asyncio.Event()
    errors: list[BaseException] = []

    async def sender() -> None:
        nonlocal sent
        while True:
            try:
                await layer.send("named", {"type": "x"})
            except Exception as exc:  # what close() gives a send it cut short (checked below)
                errors.append(exc)
                return
            sent += 1
            if sent >= 50 + 5 * round_:
                busy.set()

    senders = [asyncio.create_task(sender()) for _ in range(20)]
    async with asyncio.timeout(10):
        await busy.wait()
    await layer.close()
    _, pending = await asyncio.wait(senders, timeout=10)
    for task in pending:
        task.cancel()
    assert not pending, f"round {round_}: {len(pending)} sends never ended"
    assert all(isinstance(exc, (LayerUnavailable, LayerClosed)) for exc in errors)


async def test_close_ends_every_send_in_flight(redis_server: RedisServer) -> None:
    """Senders racing close() each get an answer or an error, never a wait without end
    (a pipeline cancelled before it started left its callers waiting forever)."""
    for round_ in range(10):
        await _senders_racing_close(redis_server.url, round_)
    async with Redis.from_url(redis_server.url) as raw:
        await raw.flushall()
