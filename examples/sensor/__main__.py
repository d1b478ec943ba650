"""``python -m examples.sensor --broker mqtt://127.0.0.1:1883``: page, bridge and a device.

One process runs the web server, the MQTT interface server and a simulated sensor, sharing
the in-memory layer; open the printed URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from urllib.parse import urlsplit

from kanal.mqtt import MqttConfig, MqttServer
from kanal.server import Config, Server

from .app import application
from .device import SimulatedSensor


async def main(broker: str, host: str, port: int) -> None:
    """Run the three until Ctrl+C."""
    web = Server(Config(app=application, host=host, port=port))
    bridge = MqttServer(application, MqttConfig(broker=broker))
    where = urlsplit(broker)
    device = SimulatedSensor("sensor-1", where.hostname or "127.0.0.1", where.port or 1883)
    tasks = [asyncio.create_task(bridge.run()), asyncio.create_task(device.run())]
    try:
        serving = asyncio.create_task(web.serve())  # until SIGTERM or Ctrl+C
        await web.started.wait()
        print(f"kanal sensor: open http://{host}:{port}/  (broker {broker}; Ctrl+C stops)")
        await serving
    finally:
        bridge.stop()
        tasks[1].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="kanal's MQTT sensor example")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.broker, args.host, args.port))
