"""The sensor example running for a test: a real Mosquitto, the web and MQTT servers, a device."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from examples.sensor.app import application
from examples.sensor.device import SimulatedSensor

from kanal.mqtt import MqttConfig, MqttServer
from kanal.testing import LiveServer, MosquittoServer


@dataclass
class RunningExample:
    web: LiveServer
    bridge: MqttServer
    device: SimulatedSensor


@contextlib.asynccontextmanager
async def sensor_example(
    live_server: Callable[..., Awaitable[LiveServer]],
) -> AsyncIterator[RunningExample]:
    """Everything ``python -m examples.sensor`` runs, on free ports, in this process."""
    with MosquittoServer() as broker:
        web = await live_server(application)
        bridge = MqttServer(application, MqttConfig(broker=broker.url))
        device = SimulatedSensor("sensor-1", broker.host, broker.port, interval=0.1)
        tasks = [asyncio.create_task(bridge.run()), asyncio.create_task(device.run())]
        try:
            async with asyncio.timeout(10):
                await bridge.wait_subscribed("sensors/+/reading")  # readings flow from here
            yield RunningExample(web, bridge, device)
        finally:
            bridge.stop()
            tasks[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks)
