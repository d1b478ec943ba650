"""The MQTT interface server against a real Mosquitto: delivery, publishing, sessions."""

# Helpers take timeouts as the communicators do.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import functools
import logging
import subprocess
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from kanal.consumers import MqttConsumer, MqttMessage
from kanal.exceptions import MqttError
from kanal.mqtt import MqttConfig, MqttServer
from kanal.testing import MosquittoServer, free_port
from kanal.typing import Message, Receive, Send

from .conftest import TIMEOUT, Gate, LogWaiter, client, next_messages, running


def echo_app(gate: Gate | None = None, subscriptions: Any = (("in/#", 1),)) -> Any:
    """A consumer that republishes each message to ``out/<topic>`` at the message's QoS."""

    class Echo(MqttConsumer):
        uses_channel_layer = False

        async def connect(self) -> None:
            for topic, qos in subscriptions:
                await self.subscribe(topic, qos)

        async def receive(self, message: MqttMessage) -> None:
            if gate is not None:
                gate.record(message.payload)
                await gate.open.wait()
            await self.publish("out/" + message.topic, message.payload, qos=max(message.qos, 1))

    return Echo.as_asgi()


@pytest.mark.parametrize("version", ["5", "3.1.1"])
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_messages_reach_the_application_and_its_publishes_reach_the_broker(
    broker: MosquittoServer, version: str, qos: int
) -> None:
    async with (
        running(echo_app(), broker, mqtt_version=version) as server,
        client(broker) as device,
    ):
        await device.subscribe("out/#", 1)
        for number in range(5):
            await device.publish(f"in/{number}", f"m{number}".encode(), qos=qos)
        got = await next_messages(device, 5)
    assert sorted(m.payload for m in got) == [f"m{n}".encode() for n in range(5)]
    assert {str(m.topic) for m in got} == {f"out/in/{n}" for n in range(5)}
    assert server.stats.delivered == 5
    assert server.stats.acked == (5 if qos else 0)


async def test_the_event_carries_topic_payload_qos_retain_and_properties(
    broker: MosquittoServer,
) -> None:
    events: asyncio.Queue[Message] = asyncio.Queue()

    async def app(scope: Any, receive: Receive, send: Send) -> None:
        assert scope["type"] == "mqtt" and scope["mqtt_version"] == "5"
        assert (await receive())["type"] == "mqtt.connect"
        await send({"type": "mqtt.subscribe", "topic": "s/#", "qos": 2})
        while (event := await receive())["type"] == "mqtt.message":
            await events.put(event)
            await send({"type": "mqtt.ack", "id": event["id"]})

    async with client(broker, protocol=aiomqtt.ProtocolVersion.V5) as device:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.PUBLISH)
        properties.ContentType = "application/json"
        properties.UserProperty = [("unit", "C")]
        await device.publish("s/kept", b"21.5", qos=1, retain=True, properties=properties)
        async with running(app, broker, subscribed=["s/#"]):
            async with asyncio.timeout(TIMEOUT):
                event = await events.get()
    assert event["topic"] == "s/kept"
    assert event["payload"] == b"21.5"
    assert event["qos"] == 1  # granted 2, published at 1: the lower one
    assert event["retain"] is True
    assert event["duplicate"] is False
    assert event["properties"] == {
        "content_type": "application/json",
        "user_properties": [["unit", "C"]],
    }


async def test_unsubscribe_stops_the_messages(broker: MosquittoServer) -> None:
    seen: asyncio.Queue[bytes] = asyncio.Queue()

    class Toggle(MqttConsumer):
        uses_channel_layer = False
        subscriptions = [("a", 1), ("b", 1)]

        async def receive(self, message: MqttMessage) -> None:
            await seen.put(message.payload)
            if message.payload == b"stop":
                await self.unsubscribe("a")
                await self.publish("unsubscribed", b"", qos=1)

    async with running(Toggle.as_asgi(), broker, ["a", "b"]), client(broker) as device:
        await device.subscribe("unsubscribed", 1)
        await device.publish("a", b"stop", qos=1)
        await next_messages(device, 1)
        await device.publish("a", b"lost", qos=1)
        await device.publish("b", b"marker", qos=1)
        async with asyncio.timeout(TIMEOUT):
            assert [await seen.get(), await seen.get()] == [b"stop", b"marker"]


async def test_bad_events_raise_mqtt_error_to_the_application(broker: MosquittoServer) -> None:
    errors: asyncio.Queue[str] = asyncio.Queue()

    async def app(scope: Any, receive: Receive, send: Send) -> None:
        await receive()
        for event in (
            {"type": "mqtt.publish", "topic": "a/+", "payload": b"x"},
            {"type": "mqtt.publish", "topic": "a", "payload": 3},
            {"type": "mqtt.subscribe", "topic": "a/#/b"},
            {"type": "mqtt.subscribe", "topic": "a", "qos": 3},
            {"type": "mqtt.pub", "topic": "a"},
        ):
            try:
                await send(event)
            except MqttError as exc:
                await errors.put(str(exc))
        await receive()

    async with running(app, broker, subscribed=()):
        async with asyncio.timeout(TIMEOUT):
            found = [await errors.get() for _ in range(5)]
    assert "wildcards" in found[0] and "payload" in found[1] and "'#'" in found[2]
    assert "qos" in found[3] and "mqtt.pub" in found[4]


async def test_a_failing_handler_is_logged_with_its_topic_and_the_others_go_on(
    broker: MosquittoServer, caplog: pytest.LogCaptureFixture
) -> None:
    class Fragile(MqttConsumer):
        uses_channel_layer = False
        subscriptions = [("in/#", 1)]

        async def receive(self, message: MqttMessage) -> None:
            if message.payload == b"bad":
                raise ValueError("cannot parse")
            await self.publish("out", message.payload, qos=1)

    caplog.set_level(logging.ERROR, "kanal.consumers")
    async with running(Fragile.as_asgi(), broker) as server, client(broker) as device:
        await device.subscribe("out", 1)
        for payload in (b"one", b"bad", b"two"):
            await device.publish("in/sensor-7", payload, qos=1)
        got = await next_messages(device, 2)
        assert [m.payload for m in got] == [b"one", b"two"]
    failures = [r for r in caplog.records if "cannot parse" in r.getMessage()]
    assert len(failures) == 1 and "'in/sensor-7'" in failures[0].getMessage()
    assert server.stats.acked == 3  # the failed one too: it would fail again


async def collect_payloads(
    connection: aiomqtt.Client, wanted: set[int], timeout: float = 30
) -> list[int]:
    """Payloads (as ints) received until every one of ``wanted`` came at least once."""
    got: list[int] = []
    try:
        async with asyncio.timeout(timeout):
            async for message in connection.messages:
                assert isinstance(message.payload, bytes)
                got.append(int(message.payload))
                if wanted <= set(got):
                    break
    except TimeoutError:
        raise AssertionError(f"never came: {sorted(wanted - set(got))}") from None
    return got


@pytest.mark.parametrize("graceful", [True, False], ids=["restart", "kill"])
@pytest.mark.parametrize("qos", [1, 2])
async def test_no_qos_1_or_2_message_is_lost_across_a_broker_restart(
    broker: MosquittoServer, graceful: bool, qos: int
) -> None:
    """Messages queued at the broker and in flight to a busy application survive a restart
    of the broker, and so do the application's publishes made while it is down."""
    gate = Gate()
    count = 60  # more than the in-flight window
    async with client(broker, "dashboard", clean_session=False) as watcher:
        await watcher.subscribe("out/#", 1)  # a persistent session: it queues while away
    async with running(
        echo_app(gate, [("in/#", qos)]),
        broker,
        client_id="bridge",
        clean_session=False,
        receive_maximum=20,
    ) as server:
        async with client(broker, "sensor") as device:
            for number in range(count):
                await device.publish(f"in/{number % 3}", f"{number}".encode(), qos=qos)
        await gate.wait_seen(1)  # the application is busy; the rest waits at the broker
        if not graceful:
            # Mosquitto acknowledges before it saves; what a crash loses is its own.
            broker.save()
        broker.restart(graceful=graceful)
        gate.open.set()  # handlers finish and publish while the bridge reconnects
        await server.wait_connections(2)
        async with client(broker, "dashboard", clean_session=False) as watcher:
            got = await collect_payloads(watcher, set(range(count)))
    assert set(got) == set(range(count))
    # At-least-once: only what was in flight to the application at the restart may come
    # twice (its acknowledgement belonged to the connection that broke).
    assert len(got) - count <= 20


@pytest.mark.parametrize("graceful", [True, False], ids=["restart", "kill"])
async def test_a_qos_2_message_handled_across_a_restart_is_completed(
    broker: MosquittoServer, graceful: bool
) -> None:
    """A QoS 2 message reaches the application once its PUBREL came; the broker restarts
    before the application is done. The broker sends that PUBREL again on the next
    connection, and only the PUBCOMP the application's acknowledgement sends frees its
    in-flight slot: with a window of one, the next message comes only then."""
    gate = Gate()
    async with client(broker, "dashboard", clean_session=False) as watcher:
        await watcher.subscribe("out/#", 1)
    async with running(
        echo_app(gate, [("in/#", 2)]),
        broker,
        client_id="bridge",
        clean_session=False,
        receive_maximum=1,
    ) as server:
        async with client(broker, "sensor") as device:
            for number in range(3):
                await device.publish(f"in/{number}", f"{number}".encode(), qos=2)
        await gate.wait_seen(1)  # the first is in the application; the rest wait
        if not graceful:
            broker.save()
        broker.restart(graceful=graceful)
        await server.wait_connections(2)
        gate.open.set()  # handled after the connection it came on is gone
        async with client(broker, "dashboard", clean_session=False) as watcher:
            got = await collect_payloads(watcher, {0, 1, 2})
    assert sorted(set(got)) == [0, 1, 2]
    if graceful:
        assert got.count(0) == 1  # QoS 2: handled once, even across the restart
    else:
        # A crashed Mosquitto restores what it had sent as not yet released, and sends
        # the message itself again: once more at most, never lost.
        assert got.count(0) <= 2


async def test_a_clean_session_subscribes_again_after_a_restart(broker: MosquittoServer) -> None:
    async with running(echo_app(), broker) as server:
        broker.restart(graceful=False)
        await server.wait_connections(2)
        async with client(broker) as device:
            await device.subscribe("out/#", 1)
            await device.publish("in/x", b"after", qos=1)
            got = await next_messages(device, 1)
    assert got[0].payload == b"after"
    assert server.stats.reconnects == 1


async def test_the_server_waits_for_the_broker_at_startup(broker: MosquittoServer) -> None:
    broker.stop()
    with LogWaiter("kanal.mqtt", "cannot connect") as refused:
        server_cm = running(echo_app(), broker)
        entering = asyncio.ensure_future(server_cm.__aenter__())
        await refused.wait()
    await asyncio.to_thread(broker.start)  # a broker that comes up after its bridge
    server = await entering
    try:
        async with client(broker) as device:
            await device.subscribe("out/#", 1)
            await device.publish("in/a", b"late", qos=1)
            assert (await next_messages(device, 1))[0].payload == b"late"
    finally:
        await server_cm.__aexit__(None, None, None)
    assert server.stats.reconnects == 0


async def test_a_slow_application_holds_the_broker_back(broker: MosquittoServer) -> None:
    """QoS 1: no more than receive_maximum messages reach a stuck application; QoS 0:
    what is beyond max_queued_qos0 is dropped and counted."""
    gate = Gate()

    class Stuck(MqttConsumer):
        uses_channel_layer = False
        subscriptions = [("q1/#", 1), ("q0", 0)]
        max_concurrency = 6

        async def receive(self, message: MqttMessage) -> None:
            gate.record(message.payload)
            await gate.open.wait()
            if message.payload == b"last":
                await self.publish("done", b"", qos=1)

    async with (
        running(
            Stuck.as_asgi(), broker, ["q1/#", "q0"], receive_maximum=5, max_queued_qos0=10
        ) as server,
        client(broker) as device,
    ):
        await device.subscribe("done", 1)
        for number in range(30):
            await device.publish(f"q1/{number}", f"{number}".encode(), qos=1)
        await gate.wait_seen(5)  # one topic each: handled side by side, not in turn
        with LogWaiter("kanal.mqtt", "QoS 0 messages dropped") as dropped:
            # QoS 0 has no window: the first takes the last free slot, ten wait in the
            # server, one in the consumer's hands, and the rest is dropped.
            for number in range(50):
                await device.publish("q0", f"z{number}".encode(), qos=0)
            await dropped.wait()
        # The sixth handler got a QoS 0 message: the broker sent no sixth QoS 1 one.
        assert sorted(p for p in gate.seen if not p.startswith(b"z")) == [
            b"0",
            b"1",
            b"2",
            b"3",
            b"4",
        ]
        gate.open.set()
        await device.publish("q1/last", b"last", qos=1)
        await next_messages(device, 1)
    assert server.stats.dropped_qos0 > 0
    assert server.stats.acked == 31  # every QoS 1 message, once the application got to it


async def test_shutdown_lets_handlers_finish_and_hands_the_rest_back(
    broker: MosquittoServer,
) -> None:
    gate = Gate()
    async with running(
        echo_app(gate), broker, client_id="bridge", clean_session=False, receive_maximum=3
    ) as server:
        async with client(broker, "sensor") as device:
            for number in range(10):
                await device.publish("in/a", f"{number}".encode(), qos=1)
        await gate.wait_seen(1)
        server.stop()
        gate.open.set()  # the handlers in progress finish after stop()
    first = list(gate.seen)
    assert 1 <= len(first) < 10 and server.stats.acked == len(first)
    gate2 = Gate()
    gate2.open.set()
    async with running(echo_app(gate2), broker, client_id="bridge", clean_session=False):
        await gate2.wait_seen(10 - len(first))
    # Each message handled once: what the first process finished it acknowledged, the
    # rest the broker kept for the session and gave to the second.
    assert sorted(int(p) for p in first + gate2.seen) == list(range(10))


SHARED = "$share/workers/jobs/#"


async def test_shared_subscription_handles_each_message_once(broker: MosquittoServer) -> None:
    handled: list[tuple[str, bytes]] = []
    arrived = asyncio.Event()

    def member(name: str) -> Any:
        class Member(MqttConsumer):
            uses_channel_layer = False
            subscriptions = [(SHARED, 1)]

            async def receive(self, message: MqttMessage) -> None:
                handled.append((name, message.payload))
                arrived.set()

        return Member.as_asgi()

    async with (
        running(member("a"), broker, [SHARED], client_id="worker-a"),
        running(member("b"), broker, [SHARED], client_id="worker-b"),
        client(broker) as device,
    ):
        for number in range(40):
            await device.publish(f"jobs/{number}", f"{number}".encode(), qos=1)
        async with asyncio.timeout(TIMEOUT):
            while len(handled) < 40:
                arrived.clear()
                await arrived.wait()
    payloads = sorted(int(p) for _, p in handled)
    assert payloads == list(range(40))  # each once
    assert {name for name, _ in handled} == {"a", "b"}  # and shared


async def test_username_and_password(tmp_path: Any) -> None:
    with MosquittoServer(users={"bridge": "s3cret"}) as broker:
        gate = Gate()
        gate.open.set()
        async with (
            running(echo_app(gate), broker, username="bridge", password="s3cret"),
            client(broker, username="bridge", password="s3cret") as device,
        ):
            await device.subscribe("out/#", 1)
            await device.publish("in/a", b"authorised", qos=1)
            assert (await next_messages(device, 1))[0].payload == b"authorised"
        # A wrong password is refused: the server keeps retrying, never connected.
        server = MqttServer(
            echo_app(),
            MqttConfig(
                broker=f"mqtt://bridge:wrong@{broker.host}:{broker.port}", reconnect_min=0.05
            ),
        )
        with LogWaiter("kanal.mqtt", "cannot connect") as refused:
            task = asyncio.create_task(server.run())
            await refused.wait()
        assert not server.connected
        server.stop()
        async with asyncio.timeout(TIMEOUT):
            await task


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 it signed: (ca, cert, key)."""
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    openssl = ["openssl"]
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    run(
        [
            *openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=kanal test CA",
            "-keyout",
            ca_key,
            "-out",
            ca,
        ]
    )
    run(
        [
            *openssl,
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            key,
            "-out",
            csr,
        ]
    )
    extensions = directory / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        [
            *openssl,
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            extensions,
            "-out",
            cert,
        ]
    )
    return ca, cert, key  # fmt: skip


def make_client_certificate(directory: Path) -> tuple[Path, Path]:
    """A client certificate signed by :func:`make_certificates`' CA: (cert, key)."""
    cert, key, csr = directory / "client.pem", directory / "client.key", directory / "client.csr"
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=bridge",
         "-keyout", key, "-out", csr]
    )  # fmt: skip
    run(
        ["openssl", "x509", "-req", "-in", csr, "-CA", directory / "ca.pem",
         "-CAkey", directory / "ca.key", "-CAcreateserial", "-days", "1", "-out", cert]
    )  # fmt: skip
    return cert, key


async def echo_through(broker: MosquittoServer, config: MqttConfig, payload: bytes) -> None:
    """A kanal mqtt server on ``config`` echoes one message of a device on the plain
    listener: the server's own connection (TLS, say) works."""
    gate = Gate()
    gate.open.set()
    server = MqttServer(echo_app(gate), config)
    task = asyncio.create_task(server.run())
    try:
        async with asyncio.timeout(TIMEOUT):
            await server.wait_subscribed("in/#")
        async with client(broker) as device:
            await device.subscribe("out/#", 1)
            await device.publish("in/tls", payload, qos=1)
            assert (await next_messages(device, 1))[0].payload == payload
    finally:
        server.stop()
        await task


async def refused(config: MqttConfig, logged: str) -> None:
    """A kanal mqtt server on ``config`` never connects, and logs ``logged`` for it."""
    with LogWaiter("kanal.mqtt", logged) as refusal:
        server = MqttServer(echo_app(), config)
        task = asyncio.create_task(server.run())
        await refusal.wait()
    assert not server.connected
    server.stop()
    await task


async def test_mutual_tls_with_a_client_certificate(tmp_path: Path) -> None:
    """A broker that requires client certificates takes the server's (signed by its CA)
    and refuses a connection without one."""
    ca, cert, key = make_certificates(tmp_path)
    client_cert, client_key = make_client_certificate(tmp_path)
    tls_port = free_port()
    config = [
        f"listener {tls_port} 127.0.0.1",
        f"certfile {cert}",
        f"keyfile {key}",
        f"cafile {ca}",
        "require_certificate true",
    ]
    broker_url = f"mqtts://127.0.0.1:{tls_port}"
    with MosquittoServer(config=config) as broker:
        certified = MqttConfig(
            broker=broker_url, tls_ca=str(ca), tls_cert=str(client_cert), tls_key=str(client_key)
        )
        await echo_through(broker, certified, b"with a certificate")
        # TLS 1.3: the client's handshake completes, and the broker's alert comes next.
        await refused(MqttConfig(broker=broker_url, tls_ca=str(ca)), "certificate required")


async def test_tls_with_a_verified_broker(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    tls_port = free_port()
    config = [f"listener {tls_port} 127.0.0.1", f"certfile {cert}", f"keyfile {key}"]
    broker_url = f"mqtts://127.0.0.1:{tls_port}"
    with MosquittoServer(config=config) as broker:
        trusting = MqttConfig(broker=broker_url, tls_ca=str(ca))
        assert MqttServer(echo_app(), trusting).scope["tls"] is True
        await echo_through(broker, trusting, b"over tls")
        # Without the CA the broker's certificate is not trusted: no connection.
        await refused(MqttConfig(broker=broker_url), "CERTIFICATE_VERIFY_FAILED")


async def test_the_plugin_fixture_gives_a_fresh_broker(mosquitto_server: MosquittoServer) -> None:
    async with client(mosquitto_server) as device:
        await device.subscribe("fixture", 1)
        await device.publish("fixture", b"works", qos=1)
        assert (await next_messages(device, 1))[0].payload == b"works"
