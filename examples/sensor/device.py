"""A simulated sensor: publishes a temperature every ``interval`` seconds, obeys LED commands.

It is an ordinary MQTT client (aiomqtt), as a device's firmware would be one: kanal is on
the other side of the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time

import aiomqtt


class SimulatedSensor:
    """``sensors/<name>/reading`` every ``interval`` s; ``.../command`` sets the LED, whose
    state it publishes retained on ``.../state``."""

    def __init__(self, name: str, host: str, port: int, interval: float = 0.5) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.interval = interval
        self.led = False
        #: Set on each command obeyed (for tests and the console).
        self.commands: asyncio.Queue[str] = asyncio.Queue()

    def temperature(self) -> float:
        """A slow sine around 21 °C, as a room would drift."""
        return round(21 + 2 * math.sin(time.monotonic() / 10), 2)

    async def run(self) -> None:
        """Publish and obey until cancelled, reconnecting if the broker goes away."""
        base = f"sensors/{self.name}"
        while True:
            try:
                async with aiomqtt.Client(
                    self.host, self.port, identifier=f"device-{self.name}"
                ) as client:
                    await client.subscribe(f"{base}/command", qos=1)
                    await self._publish_state(client)
                    ticker = asyncio.create_task(self._tick(client, base))
                    try:
                        async for message in client.messages:
                            command = bytes(message.payload).decode()  # type: ignore[arg-type]
                            if command in ("led on", "led off"):
                                self.led = command == "led on"
                                await self._publish_state(client)
                                await self.commands.put(command)
                    finally:
                        ticker.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await ticker
            except aiomqtt.MqttError:
                await asyncio.sleep(1)  # a device retries at its own pace

    async def _tick(self, client: aiomqtt.Client, base: str) -> None:
        while True:
            reading = {"temperature": self.temperature(), "at": time.time()}
            await client.publish(f"{base}/reading", json.dumps(reading), qos=0)
            await asyncio.sleep(self.interval)

    async def _publish_state(self, client: aiomqtt.Client) -> None:
        await client.publish(
            f"sensors/{self.name}/state", json.dumps({"led": self.led}), qos=1, retain=True
        )
