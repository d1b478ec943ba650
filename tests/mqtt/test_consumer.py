"""MqttConsumer through MqttCommunicator: no broker, the channel layer as in production."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest

from kanal.consumers import MqttConsumer, MqttMessage
from kanal.layers import InMemoryChannelLayer
from kanal.testing import MqttCommunicator


class Readings(MqttConsumer):
    """Readings to a group; commands from the layer to a device topic."""

    subscriptions = [("sensors/+/temperature", 1)]
    groups = ["dashboard"]

    async def receive(self, message: MqttMessage) -> None:
        device = message.topic.split("/")[1]
        assert self.channel_layer is not None
        await self.channel_layer.group_send(
            "dashboard", {"type": "reading", "device": device, "value": message.json()}
        )

    async def device_command(self, event: dict[str, str]) -> None:
        await self.publish(f"sensors/{event['device']}/command", event["command"], qos=1)

    async def reading(self, event: dict[str, object]) -> None:
        """The consumer is in the group too; it ignores its own broadcasts."""


async def test_a_reading_reaches_a_group_and_a_layer_command_is_published(
    channel_layer: InMemoryChannelLayer,
) -> None:
    browser = await channel_layer.new_channel()
    await channel_layer.group_add("dashboard", browser)
    communicator = MqttCommunicator(Readings.as_asgi(channel_layer=channel_layer))
    await communicator.connect()
    subscribe = await communicator.receive_subscribe()
    assert (subscribe["topic"], subscribe["qos"]) == ("sensors/+/temperature", 1)
    assert communicator.subscriptions == {"sensors/+/temperature": 1}

    ack_id = await communicator.send_message("sensors/kitchen/temperature", b"21.5", qos=1)
    assert await communicator.receive_ack(ack_id) == ack_id
    async with asyncio.timeout(1):
        reading = await channel_layer.receive(browser)
    assert reading == {"type": "reading", "device": "kitchen", "value": 21.5}

    await channel_layer.group_send(
        "dashboard", {"type": "device.command", "device": "kitchen", "command": "fan on"}
    )
    publish = await communicator.receive_publish()
    assert publish["topic"] == "sensors/kitchen/command"
    assert publish["payload"] == "fan on" and publish["qos"] == 1
    await communicator.disconnect()


async def test_handlers_run_side_by_side_up_to_max_concurrency_and_in_order_per_topic() -> None:
    started: list[str] = []
    release = asyncio.Event()
    progress = asyncio.Event()

    class Slow(MqttConsumer):
        uses_channel_layer = False
        max_concurrency = 2

        async def receive(self, message: MqttMessage) -> None:
            started.append(message.text)
            progress.set()
            await release.wait()

    communicator = MqttCommunicator(Slow.as_asgi())
    await communicator.connect()
    for topic, payload in (("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1")):
        await communicator.send_message(topic, payload, qos=1)
    async with asyncio.timeout(1):
        while len(started) < 1:
            progress.clear()
            await progress.wait()
    # a1 runs; a2 waits for it (same topic) and holds the second slot; b1 and c1 wait.
    assert await communicator.receive_nothing(0.1)
    assert started == ["a1"]
    release.set()
    for _ in range(4):
        await communicator.receive_ack()
    assert started.index("a1") < started.index("a2")
    assert sorted(started) == ["a1", "a2", "b1", "c1"]
    await communicator.disconnect()


async def test_a_failing_handler_is_logged_acknowledged_and_the_consumer_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Fragile(MqttConsumer):
        uses_channel_layer = False

        async def receive(self, message: MqttMessage) -> None:
            if message.payload == b"bad":
                raise ValueError("unparseable")
            await self.publish("ok", message.payload)

        async def broken_event(self, event: object) -> None:
            raise RuntimeError("layer handler")

    caplog.set_level(logging.ERROR, "kanal.consumers")
    communicator = MqttCommunicator(Fragile.as_asgi())
    await communicator.connect()
    bad = await communicator.send_message("devices/7/state", b"bad", qos=2)
    await communicator.receive_ack(bad)
    await communicator.send_input({"type": "broken.event"})  # as a layer message would come
    await communicator.send_message("devices/7/state", b"good")
    assert (await communicator.receive_publish())["payload"] == b"good"
    messages = [r.getMessage() for r in caplog.records]
    assert any("'devices/7/state'" in m and "unparseable" in m for m in messages)
    assert any("broken.event" in m for m in messages)
    await communicator.disconnect()


async def test_disconnect_waits_for_the_handlers_in_progress() -> None:
    finished: list[str] = []
    release = asyncio.Event()

    class Careful(MqttConsumer):
        uses_channel_layer = False

        async def receive(self, message: MqttMessage) -> None:
            await release.wait()
            finished.append(message.text)

        async def disconnect(self) -> None:
            finished.append("disconnect")

    communicator = MqttCommunicator(Careful.as_asgi())
    await communicator.connect()
    await communicator.send_message("t", "m1", qos=1)
    await communicator.send_input({"type": "mqtt.disconnect"})
    assert await communicator.receive_nothing(0.05)  # still handling m1
    release.set()
    await communicator.receive_ack()
    await communicator.wait()
    assert finished == ["m1", "disconnect"]


def test_a_layer_message_cannot_call_the_api() -> None:
    from kanal.consumers._base import _api_names

    names = _api_names(MqttConsumer)
    assert {"publish", "subscribe", "receive", "connect"} <= names
    assert "mqtt_message" not in names and "mqtt_connect" not in names


def test_importing_kanal_mqtt_without_aiomqtt_names_the_extra() -> None:
    code = "import sys; sys.modules['aiomqtt'] = None; import kanal.mqtt"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "MissingDependency" in result.stderr and "pip install 'kanal[mqtt]'" in result.stderr
    # The consumer needs no MQTT client.
    code = "import sys; sys.modules['aiomqtt'] = None; from kanal.consumers import MqttConsumer"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
