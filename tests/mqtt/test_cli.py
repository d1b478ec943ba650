"""``kanal mqtt``: the command runs the application for a real broker and stops on SIGTERM."""

from __future__ import annotations

import pytest
from tests.child_process import child_process

from kanal.cli import main
from kanal.testing import MosquittoServer

from .conftest import client, next_messages


async def test_kanal_mqtt_runs_the_application_until_sigterm(broker: MosquittoServer) -> None:
    command = child_process(
        "-m",
        "kanal.cli",
        "mqtt",
        "tests.mqtt.apps:echo",
        "--broker",
        broker.url,
        "--client-id",
        "cli-bridge",
        "--persistent-session",
        "--mqtt-version",
        "3.1.1",
        "--log-level",
        "info",
    )
    async with command as process, client(broker) as device:
        await process.wait_for(
            r"connected to the MQTT broker .* as 'cli-bridge' \(MQTT 3\.1\.1, persistent"
        )
        await device.subscribe("out/#", 1)
        # Retained: it reaches the bridge whether or not its subscription is in place yet.
        await device.publish("in/a", b"hello", qos=1, retain=True)
        got = await next_messages(device, 1)
        assert got[0].payload == b"cli-bridge:hello"
        assert await process.stop() == 0
        await process.wait_for("disconnected from the MQTT broker")


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--broker", "http://x"], "mqtt:// or mqtts://"),
        (["--persistent-session"], "client_id"),
        (["--receive-maximum", "0"], "receive_maximum"),
    ],
)
def test_bad_options_are_errors_naming_them(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mqtt", "tests.mqtt.apps:echo", *argv]) == 2
    assert named in capsys.readouterr().err
