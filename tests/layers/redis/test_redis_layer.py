"""Redis-layer specifics: configuration, URLs, encryption at rest, fan-out per process."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from redis.asyncio import Redis

from kanal.exceptions import ChannelFull, ConfigError, InvalidMessage
from kanal.layers import MessageCodec, layer_from_url
from kanal.layers.redis import EncryptedCodec, RedisChannelLayer
from kanal.layers.redis._connection import parse_hosts
from kanal.testing import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client


def test_hosts_in_every_channels_redis_shape() -> None:
    specs = parse_hosts(
        [
            "redis://cache:6380/2",
            ("10.0.0.5", 6379),
            {"address": "rediss://secure:6390/0", "ssl_cert_reqs": None},
            {"host": "plain", "port": 6400, "db": 3, "password": "pw"},
            {"sentinels": [("s1", 26379), ("s2", 26379)], "master_name": "main"},
        ]
    )
    assert [spec.name for spec in specs] == [
        "cache:6380/2",
        "10.0.0.5:6379",
        "secure:6390/0",
        "plain:6400/3",
        "sentinel:main",
    ]
    assert specs[2].kwargs == {"ssl_cert_reqs": None}
    assert specs[4].sentinels == [("s1", 26379), ("s2", 26379)]
    assert [spec.name for spec in parse_hosts(None)] == ["localhost:6379"]
    sentinel = parse_hosts("redis+sentinel://:pw@s1:26379,s2:26380/main/1")[0]
    assert sentinel.master_name == "main" and sentinel.kwargs == {"db": 1, "password": "pw"}
    assert len(parse_hosts("redis://a:1,b:2/0")) == 2


@pytest.mark.parametrize(
    ("hosts", "fragment"),
    [
        ([42], "42"),
        ([], "empty"),
        (["http://nope"], "http://nope"),
        ([{"sentinels": [("s", 1)]}], "master_name"),
        ([{"db": 1}], "'address' or 'host'"),
        (["redis://a:1/0", "redis://a:1/0"], "twice"),
    ],
)
def test_bad_hosts_are_refused_by_name(hosts: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        RedisChannelLayer(hosts=hosts)


def test_from_url_options_and_lists() -> None:
    layer = layer_from_url(
        "redis://127.0.0.1:6390/1?prefix=app&capacity=7&expiry=5&timeout=2"
        "&channel_capacity=http.request:200,websocket.*:20"
    )
    assert isinstance(layer, RedisChannelLayer)
    assert (layer.prefix, layer.capacity, layer.expiry, layer.timeout) == ("app", 7, 5.0, 2.0)
    assert layer.get_capacity("websocket.send") == 20
    assert [spec.name for spec in layer.hosts] == ["127.0.0.1:6390/1"]
    sharded = RedisChannelLayer.from_url(["redis://a:1/0?prefix=x", "redis://b:2/0"])
    assert [spec.name for spec in sharded.hosts] == ["a:1/0", "b:2/0"]
    assert sharded.prefix == "x"
    with pytest.raises(ConfigError, match="colour"):
        RedisChannelLayer.from_url("redis://a:1/0?colour=blue")
    options = RedisChannelLayer.from_url("redis://a:1/0?cluster=yes&symmetric_encryption_keys=k,")
    assert options.cluster and isinstance(options.codec, EncryptedCodec)
    assert not RedisChannelLayer.from_url("redis://a:1/0?cluster=off").cluster
    with pytest.raises(ConfigError, match=r"cluster='maybe'.*expected true or false"):
        RedisChannelLayer.from_url("redis://a:1/0?cluster=maybe")
    with pytest.raises(ConfigError, match=r"timeout='0'.*positive number"):
        RedisChannelLayer.from_url("redis://a:1/0?timeout=0")
    with pytest.raises(ConfigError, match="prefix"):
        RedisChannelLayer(prefix="has space")
    with pytest.raises(ConfigError, match="symmetric_encryption_keys"):
        RedisChannelLayer(symmetric_encryption_keys="one string, not a list")


async def test_encrypted_at_rest_and_keys_rotate(redis_server: RedisServer, raw: Redis) -> None:
    """Bodies in Redis are unreadable; a new first key still decrypts the old key's messages."""
    old = RedisChannelLayer(hosts=[redis_server.url], symmetric_encryption_keys=["old"])
    rotated = RedisChannelLayer(hosts=[redis_server.url], symmetric_encryption_keys=["new", "old"])
    stranger = RedisChannelLayer(hosts=[redis_server.url], symmetric_encryption_keys=["other"])
    try:
        await old.flush()
        await old.send("secrets", {"type": "x", "text": "the launch code is 1234"})
        stored = await raw.lrange("asgi:ch:secrets", 0, -1)
        assert len(stored) == 1 and b"launch code" not in stored[0]
        async with asyncio.timeout(5):
            assert (await rotated.receive("secrets"))["text"] == "the launch code is 1234"
        await rotated.send("secrets", {"type": "x", "text": "new key"})
        with pytest.raises(InvalidMessage, match="decrypted"):
            async with asyncio.timeout(5):
                await stranger.receive("secrets")
    finally:
        await old.flush()
        for layer in (old, rotated, stranger):
            await layer.close()
        await raw.aclose()


async def test_a_message_refused_for_a_wrong_key_is_counted_apart_and_logged(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Undecodable (a wrong key): the receiver gets InvalidMessage, stats() counts it as
    refused and not as received, and each one is logged; what follows is received."""
    sender = RedisChannelLayer(hosts=[redis_server.url], symmetric_encryption_keys=["ours"])
    stranger = RedisChannelLayer(hosts=[redis_server.url], symmetric_encryption_keys=["other"])
    try:
        await sender.flush()
        mine = await stranger.new_channel()
        await stranger.group_add("room", mine)
        await sender.send("jobs", {"type": "x"})
        await sender.group_send("room", {"type": "x"})
        await stranger.send(mine, {"type": "readable"})
        async with asyncio.timeout(5):
            with pytest.raises(InvalidMessage, match="decrypted"):
                await stranger.receive("jobs")
            with pytest.raises(InvalidMessage, match="decrypted"):
                await stranger.receive(mine)
            assert await stranger.receive(mine) == {"type": "readable"}
        stats = stranger.stats()
        assert (stats.refused, stats.received) == (2, 1)
        assert stats.channels["jobs"].refused == 1 and stats.channels["jobs"].received == 0
        assert stats.channels[mine].refused == 1 and stats.channels[mine].received == 1
        refusals = [r for r in caplog.records if "refused an undecodable message" in r.message]
        assert [r.levelname for r in refusals] == ["WARNING", "WARNING"]
    finally:
        await sender.flush()
        for layer in (sender, stranger):
            await layer.close()


async def test_group_send_pushes_one_record_per_process(
    redis_server: RedisServer, raw: Redis
) -> None:
    """50 members in one (here: absent) process cost one inbox record, not 50."""
    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="once")
    try:
        await layer.flush()
        for n in range(50):
            await layer.group_add("crowd", f"specific.farawayproc!{n}")
        await layer.group_add("crowd", f"specific.otherproc!{n}")
        await layer.group_send("crowd", {"type": "hello"})
        assert await raw.llen("once:in:farawayproc") == 1
        assert await raw.llen("once:in:otherproc") == 1
        record = (await raw.lrange("once:in:farawayproc", 0, 0))[0]
        assert record.split(b"\n", 1)[0].count(b"specific.farawayproc!") == 50
        # Nothing is counted per member in Redis: the receiving process enforces capacity.
        assert await raw.exists("once:n:farawayproc") == 0
        assert layer.stats().groups["crowd"].delivered == 51
        # A channel the receiving process marked full is skipped and counted as dropped.
        await raw.sadd("once:f:farawayproc", "specific.farawayproc!7")
        await layer.group_send("crowd", {"type": "hello"})
        record = (await raw.lrange("once:in:farawayproc", 1, 1))[0]
        assert record.split(b"\n", 1)[0].count(b"specific.farawayproc!") == 49
        assert b"specific.farawayproc!7 " not in record.split(b"\n", 1)[0] + b" "
        assert layer.stats().channels["specific.farawayproc!7"].dropped == 1
    finally:
        await layer.flush()
        await layer.close()
        await raw.aclose()


async def test_group_send_keeps_members_by_process_until_they_change(
    redis_server: RedisServer, raw: Redis
) -> None:
    """group_send groups the members by process once and keeps that (so the next sends
    never walk the members); a join, a leave or an expiry makes it start afresh."""
    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="gm")

    async def names_in_last_record(process: str) -> list[bytes]:
        record = (await raw.lrange(f"gm:in:{process}", -1, -1))[0]
        return sorted(record.split(b"\n", 1)[0].split(b" ")[1:])

    try:
        await layer.flush()
        for n in range(3):
            await layer.group_add("room", f"specific.far!{n}")
        await layer.group_add("room", "worker")
        await layer.group_send("room", {"type": "one"})
        assert await raw.hgetall("gm:gm:room") == {
            b"far": b"3:specific.far!0 specific.far!1 specific.far!2",
            b".": b"1:worker",
        }
        # It expires with the memberships it was made from, never after them.
        expires = await raw.pexpiretime("gm:gm:room")
        assert 0 < expires <= await raw.pexpiretime("gm:g:room")
        assert await raw.llen("gm:ch:worker") == 1
        # Kept as it is, it is what the next send uses: prove it by changing it behind
        # the layer's back (nothing else ever writes it).
        await raw.hset("gm:gm:room", "far", "1:specific.far!1")
        await layer.group_send("room", {"type": "two"})
        assert await names_in_last_record("far") == [b"specific.far!1"]
        await layer.group_discard("room", "specific.far!1")
        assert await raw.exists("gm:gm:room") == 0
        await layer.group_send("room", {"type": "three"})
        assert await names_in_last_record("far") == [b"specific.far!0", b"specific.far!2"]
        await layer.group_add("room", "specific.near!0")
        await layer.group_send("room", {"type": "four"})
        assert await names_in_last_record("near") == [b"specific.near!0"]
        # A membership that expired (its deadline moved into the past) is gone at once.
        await raw.zadd("gm:g:room", {"specific.far!2": 1})
        await layer.group_send("room", {"type": "five"})
        assert await names_in_last_record("far") == [b"specific.far!0"]
        assert layer.stats().groups["room"].delivered == 4 + 2 + 3 + 4 + 3
        # The sorted set gone (a flush deletes keys in batches, an operator may delete
        # one): the kept grouping is not trusted, and goes too.
        await raw.delete("gm:g:room")
        before = await raw.llen("gm:in:far")
        await layer.group_send("room", {"type": "six"})
        assert await raw.llen("gm:in:far") == before
        assert await raw.exists("gm:gm:room") == 0
    finally:
        await layer.flush()
        await layer.close()
        await raw.aclose()


class _SetCodec(MessageCodec):
    """A user's codec that decodes to a type the shared decoding would not copy."""

    def decode(self, data: bytes) -> dict[str, Any]:
        message = super().decode(data)
        message["tags"] = set(message["tags"])
        return message


async def test_a_codec_of_the_users_decodes_for_each_receiver(redis_server: RedisServer) -> None:
    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="codec", codec=_SetCodec())
    try:
        members = [await layer.new_channel() for _ in range(2)]
        for channel in members:
            await layer.group_add("room", channel)
        await layer.group_send("room", {"type": "t", "tags": ["a"]})
        async with asyncio.timeout(5):
            first, second = [await layer.receive(channel) for channel in members]
        first["tags"].add("b")
        assert second["tags"] == {"a"}
    finally:
        await layer.flush()
        await layer.close()


def _watch_marks(layer: RedisChannelLayer) -> dict[str, asyncio.Event]:
    """Events set once a full mark (SADD) or its removal (SREM) has reached Redis."""
    events = {"SADD": asyncio.Event(), "SREM": asyncio.Event()}
    receiving = layer._receiver
    original = receiving._set_mark

    def spy(local: Any, command: str) -> None:
        original(local, command)
        shards = layer._shards
        assert shards is not None
        # Queued behind the mark, in the same pipeline: its reply means the mark is in.
        shards.for_name(local.process).batcher.call("PING").add_done_callback(
            lambda _: events[command].set()
        )

    receiving._set_mark = spy  # type: ignore[method-assign]
    return events


async def test_receiving_process_enforces_capacity(
    redis_server: RedisServer, raw: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A full backlog is marked in Redis for other processes' senders; a group message
    that arrives anyway (sent before the mark) is dropped, counted and logged where it
    arrives; the mark goes when the backlog drains."""
    caplog.set_level(logging.WARNING, logger="kanal.layers")
    receiver = RedisChannelLayer(hosts=[redis_server.url], prefix="cap", capacity=2)
    sender = RedisChannelLayer(hosts=[redis_server.url], prefix="cap", capacity=2)
    try:
        await receiver.flush()
        events = _watch_marks(receiver)
        channel = await receiver.new_channel()
        marks = f"cap:f:{channel.split('.', 1)[1].split('!')[0]}"
        await receiver.group_add("room", channel)
        for n in range(2):  # group messages: not counted in Redis, only in the backlog
            await sender.group_send("room", {"type": "g", "n": n})
        async with asyncio.timeout(5):
            await events["SADD"].wait()
        assert await raw.sismember(marks, channel)
        with pytest.raises(ChannelFull):
            await sender.send(channel, {"type": "direct"})
        # The race the mark cannot close: a group_send that ran before the mark arrived.
        await raw.srem(marks, channel)
        events["SADD"].clear()
        await sender.group_send("room", {"type": "late"})
        async with asyncio.timeout(5):
            await events["SADD"].wait()  # marked again, after counting the drop
        assert await raw.sismember(marks, channel)
        stats = receiver.stats()
        assert stats.dropped == 1 and stats.channels[channel].dropped == 1
        assert any(channel in r.getMessage() for r in caplog.records)
        async with asyncio.timeout(5):
            assert [(await receiver.receive(channel))["n"] for _ in range(2)] == [0, 1]
            await events["SREM"].wait()
        assert not await raw.sismember(marks, channel)
        await sender.send(channel, {"type": "direct"})
        async with asyncio.timeout(5):
            assert (await receiver.receive(channel))["type"] == "direct"
    finally:
        await receiver.flush()
        await receiver.close()
        await sender.close()
        await raw.aclose()


def _count_clients(url: str) -> int:
    """How many connections the Redis at ``url`` has now (from a thread without a loop)."""

    async def count() -> int:
        client = Redis.from_url(url)
        try:
            return len(await client.client_list())
        finally:
            await client.aclose()

    return asyncio.run(count())


def test_sync_facade_reuses_connections(redis_server: RedisServer) -> None:
    """Many sync calls from many threads: one loop thread, a fixed set of connections."""
    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="sync", capacity=500)
    sync = layer.sync
    try:
        channel = sync.new_channel()
        sync.send(channel, {"type": "warm-up"})
        assert sync.receive(channel, timeout=5)["type"] == "warm-up"
        threads_before = threading.active_count()
        clients_before = _count_clients(redis_server.url)

        def worker() -> None:
            for n in range(50):
                sync.send(channel, {"type": "n", "n": n})

        workers = [threading.Thread(target=worker) for _ in range(4)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(30)
        received = [sync.receive(channel, timeout=5)["n"] for _ in range(200)]
        assert sorted(received) == sorted(list(range(50)) * 4)
        assert threading.active_count() == threads_before
        assert _count_clients(redis_server.url) <= clients_before
    finally:
        sync.flush()
        sync.close()


def test_async_to_sync_calls_share_one_loop_and_its_connections(
    redis_server: RedisServer,
) -> None:
    """What a sync Django view of a WSGI process does: async_to_sync(layer.group_send)(...)
    from a plain thread. asgiref runs each such call on a new loop that it closes
    afterwards; a layer made for_sync() lives on one background loop instead, so calls
    neither connect anew nor leave connections unclosed behind them."""
    receiving = RedisChannelLayer(hosts=[redis_server.url], prefix="a2s").for_sync()
    sending = RedisChannelLayer(hosts=[redis_server.url], prefix="a2s").for_sync()

    try:
        channel = async_to_sync(receiving.new_channel)()
        async_to_sync(receiving.group_add)("room", channel)
        async_to_sync(sending.send)(channel, {"type": "warm-up"})
        assert async_to_sync(receiving.receive)(channel)["type"] == "warm-up"
        home = sending.bound_loop()
        assert home is not None and home is receiving.bound_loop()
        clients_before = _count_clients(redis_server.url)
        for n in range(20):
            async_to_sync(sending.send)(channel, {"type": "direct", "n": n})
            async_to_sync(sending.group_send)("room", {"type": "group", "n": n})
        received = [async_to_sync(receiving.receive)(channel) for _ in range(40)]
        assert [m["n"] for m in received if m["type"] == "direct"] == list(range(20))
        assert [m["n"] for m in received if m["type"] == "group"] == list(range(20))
        assert sending.bound_loop() is home
        assert _count_clients(redis_server.url) <= clients_before
    finally:
        for layer in (receiving, sending):
            async_to_sync(layer.flush)()
            async_to_sync(layer.close)()


def test_async_to_sync_without_for_sync_leaves_no_connection_open(
    redis_server: RedisServer,
) -> None:
    """Without for_sync(), each async_to_sync call binds the layer to asgiref's loop for
    that call: it works, and the connections it opened are closed as that loop ends."""
    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="plain")
    try:
        clients_before = _count_clients(redis_server.url)
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)("room", channel)
        for n in range(5):
            async_to_sync(layer.group_send)("room", {"type": "group", "n": n})
            assert async_to_sync(layer.receive)(channel) == {"type": "group", "n": n}
        assert layer.bound_loop() is None  # each call's loop ended with it
        assert _count_clients(redis_server.url) <= clients_before
    finally:
        async_to_sync(layer.flush)()
        async_to_sync(layer.close)()


def test_async_to_sync_of_a_function_of_ones_own_keeps_its_loop(
    redis_server: RedisServer,
) -> None:
    """async_to_sync(listen)() may run for as long as a server: the layer lives on that
    loop (no call crosses threads), unlike a lone async_to_sync(layer.send)(...)."""
    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="own")

    async def listen() -> tuple[bool, list[int]]:
        channel = await layer.new_channel()
        for n in range(5):
            await layer.send(channel, {"type": "n", "n": n})
        first = await layer.receive(channel)
        rest = [layer.receive_nowait(channel) for _ in range(4)]
        here = layer.bound_loop() is asyncio.get_running_loop()
        await layer.flush()
        await layer.close()
        return here, [first["n"]] + [message["n"] for message in rest if message]

    here, received = async_to_sync(listen)()
    assert here
    assert received == [0, 1, 2, 3, 4]


def test_messages_drained_before_a_loop_ends_are_received_after_it(
    redis_server: RedisServer,
) -> None:
    """A loop that ends without close() takes the layer's connections with it, not the
    messages its inbox drain had buffered: the next loop's receives get them, and the
    places they held in the channel's count are released."""
    receiving = RedisChannelLayer(hosts=[redis_server.url], prefix="kept")
    sending = RedisChannelLayer(hosts=[redis_server.url], prefix="kept", capacity=3)

    async def first() -> str:
        channel = await receiving.new_channel()
        for n in range(3):
            await sending.send(channel, {"type": "n", "n": n})
        message = await receiving.receive(channel)
        assert message["n"] == 0
        # The other two are on their way or buffered here already; wait until they are
        # (the buffer is the layer's own, and signals nothing).
        async with asyncio.timeout(10):
            while receiving.stats().channels[channel].pending < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        return channel

    async def second(channel: str) -> list[int]:
        try:
            async with asyncio.timeout(10):
                got = [(await receiving.receive(channel))["n"] for _ in range(2)]
                # Their places were released: the channel (capacity 3) takes three more.
                sent = 3
                while sent < 6:
                    try:
                        await sending.send(channel, {"type": "n", "n": sent})
                        sent += 1
                    except ChannelFull:  # a release still on its way
                        await asyncio.sleep(0.01)
                got += [(await receiving.receive(channel))["n"] for _ in range(3)]
                return got
        finally:
            for layer in (receiving, sending):
                await layer.flush()
                await layer.close()

    channel = asyncio.run(first())
    assert asyncio.run(second(channel)) == [1, 2, 3, 4, 5]


_SCRIPT_THAT_NEVER_CLOSES = """
import sys
from asgiref.sync import async_to_sync
from kanal.layers.redis import RedisChannelLayer
layer = RedisChannelLayer(hosts=[sys.argv[1]], prefix="exit")
if sys.argv[2] == "for_sync":
    layer.for_sync()
channel = async_to_sync(layer.new_channel)()
async_to_sync(layer.group_add)("g", channel)
async_to_sync(layer.group_send)("g", {"type": "x"})
print(async_to_sync(layer.receive)(channel)["type"])
layer.sync.send(channel, {"type": "y"})
"""


@pytest.mark.parametrize("mode", ["for_sync", "plain"])
def test_a_script_that_never_closes_its_layer_exits_cleanly(
    redis_server: RedisServer, mode: str
) -> None:
    """The shared background loop closes the layers living on it at exit, and a loop of
    asgiref's closes the connections made on it as it ends: no pending task, no
    traceback, no unclosed connection (with every warning shown)."""
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", _SCRIPT_THAT_NEVER_CLOSES, redis_server.url, mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "x"
    assert done.stderr == ""


def _in_forked_child(layer: Any, channel: str, conn: Any) -> None:
    try:
        layer.sync.send(channel, {"type": "from-child"})
        conn.send(layer.sync.receive(channel, timeout=5)["type"])
    except BaseException as exc:  # reported to the parent, which fails the test
        conn.send(repr(exc))


def test_a_forked_child_starts_afresh(redis_server: RedisServer) -> None:
    """A prefork worker (Celery, gunicorn) inherits a layer its parent already used, bound
    to a loop that runs in the parent only: the child connects anew instead of forwarding
    its calls to a loop nothing runs (which waited forever)."""
    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="fork")
    try:
        channel = layer.sync.new_channel()
        layer.sync.send(channel, {"type": "from-parent"})
        assert layer.sync.receive(channel, timeout=5)["type"] == "from-parent"
        context = multiprocessing.get_context("fork")
        mine, theirs = context.Pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            child = context.Process(target=_in_forked_child, args=(layer, channel, theirs))
            child.start()
        try:
            assert mine.poll(30), "the forked child's calls did not return"
            assert mine.recv() == "from-child"
        finally:
            child.join(10)
            if child.is_alive():
                child.kill()
        assert layer.bound_loop() is not None  # the parent's binding is untouched
        layer.sync.send(channel, {"type": "parent-again"})
        assert layer.sync.receive(channel, timeout=5)["type"] == "parent-again"
    finally:
        layer.sync.flush()
        layer.sync.close()


async def test_waiting_receivers_of_a_named_channel_share_one_round_trip(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten workers waiting on one queue take ten queued messages with one BLMPOP."""
    layer = RedisChannelLayer(hosts=[redis_server.url], prefix="pull")
    try:
        await layer.flush()
        for n in range(10):
            await layer.send("jobs", {"type": "job", "n": n})
        shards = layer._shards
        assert shards is not None
        blocking = shards.for_name("jobs").blocking
        original = blocking.execute_command
        pops: list[tuple[Any, ...]] = []

        async def counting(*args: Any, **options: Any) -> Any:
            if args and args[0] == "BLMPOP":
                pops.append(args)
            return await original(*args, **options)

        monkeypatch.setattr(blocking, "execute_command", counting)
        async with asyncio.timeout(10):
            got = await asyncio.gather(*(layer.receive("jobs") for _ in range(10)))
        assert sorted(message["n"] for message in got) == list(range(10))
        assert len(pops) == 1 and pops[0][-1] == 10
        # Receivers that left are not given anything: what a pop took for them goes back.
        waiting = [asyncio.create_task(layer.receive("jobs")) for _ in range(3)]
        await asyncio.sleep(0)  # the three wait
        waiting[1].cancel()
        await layer.send("jobs", {"type": "job", "n": 10})
        await layer.send("jobs", {"type": "job", "n": 11})
        async with asyncio.timeout(10):
            done = await asyncio.gather(waiting[0], waiting[2])
        assert sorted(message["n"] for message in done) == [10, 11]
        assert layer.receive_nowait("jobs") is None
    finally:
        await layer.flush()
        await layer.close()
