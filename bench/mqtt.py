"""MQTT to WebSockets: messages/s from a broker through a consumer to a WebSocket group.

Both sides run the same application (``bench/mqtt_apps.py`` and ``bench/mqtt_channels/``):
an MQTT consumer that ``group_send``\\s every message on ``bench/#`` to the group
``readings``, and a WebSocket consumer per page in that group. Each as two processes on the
same Mosquitto and the same ``redis-server`` (both started here on free ports):

* ``kanal``: ``kanal mqtt bench.mqtt_apps:application`` and ``kanal serve`` of the same app,
  ``KANAL_LAYER=redis://...``;
* ``mqttasgi``: ``mqttasgi bench.mqtt_channels.asgi:application`` and ``daphne`` of it,
  channels_redis's ``RedisChannelLayer``.

The load (this process) opens PAGES WebSockets, waits until a probe message reaches every
one, then publishes MESSAGES messages at QoS 1 (up to WINDOW unacknowledged at once) and
waits until every page has every message, or until nothing arrived for QUIET seconds.
Figures: ``throughput`` (messages/s: MESSAGES / first publish -> last receipt) and
``delivered`` (% of MESSAGES x PAGES). Repeats rotate the order; medians.

Run ``python -m bench mqtt [--repeats N]``; ``BENCH_MQTT_MESSAGES`` and ``BENCH_MQTT_PAGES``
change the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import aiomqtt
import websockets

from bench._common import Figure
from bench.server import ROOT, _stop, _wait_ready, free_port
from kanal.testing import MosquittoServer, RedisServer

__all__ = ["run"]

SUITE = "mqtt"
MESSAGES = int(os.environ.get("BENCH_MQTT_MESSAGES", "5000"))
PAGES = int(os.environ.get("BENCH_MQTT_PAGES", "10"))
WINDOW = 100  # QoS 1 publishes in flight from the load at once
QUIET = 10.0
PROBE_LIMIT = 60.0
IMPLS = ("kanal", "mqttasgi")


def _commands(impl: str, web_port: int, broker: MosquittoServer) -> list[list[str]]:
    python = sys.executable
    if impl == "kanal":
        app = "bench.mqtt_apps:application"
        return [
            [python, "-m", "kanal.cli", "serve", app, "--port", str(web_port)],
            [python, "-m", "kanal.cli", "mqtt", app, "--broker", broker.url, "--log-level",
             "warning"],
        ]  # fmt: skip
    app = "bench.mqtt_channels.asgi:application"
    bin_dir = os.path.dirname(python)
    return [
        [os.path.join(bin_dir, "daphne"), "-p", str(web_port), app],
        [os.path.join(bin_dir, "mqttasgi"), "-H", broker.host, "-p", str(broker.port),
         "-i", "bench-mqttasgi", app],
    ]  # fmt: skip


@contextlib.contextmanager
def _processes(impl: str, web_port: int, broker: MosquittoServer, redis_url: str) -> Iterator[None]:
    env = dict(
        os.environ,
        KANAL_LAYER=redis_url,
        CHAT_REDIS_URL=redis_url,
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    started: list[subprocess.Popen[bytes]] = []
    try:
        for command in _commands(impl, web_port, broker):
            started.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        if not _wait_ready(web_port, started[0]):
            raise RuntimeError(f"{impl}: the WebSocket server did not start")
        yield
    finally:
        for process in started:
            _stop(process)


async def _measure(web_port: int, broker: MosquittoServer) -> tuple[float, float]:
    """(messages/s, delivered %) of one run against servers already started."""
    url = f"ws://127.0.0.1:{web_port}/ws/readings/"
    pages = [
        await websockets.connect(url, origin=f"http://127.0.0.1:{web_port}", max_queue=None)
        for _ in range(PAGES)
    ]
    counts = [0] * PAGES
    last_arrival = [time.monotonic()]
    done = asyncio.Event()

    async def read(index: int, page: websockets.ClientConnection) -> None:
        async for frame in page:
            if json.loads(frame).get("seq", -1) >= 0:
                counts[index] += 1
                last_arrival[0] = time.monotonic()
                if all(count >= MESSAGES for count in counts):
                    done.set()

    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-load") as load:
        load.pending_calls_threshold = WINDOW + 10  # the window is meant: no warning
        # Probe until every page hears: the bridge is subscribed, every page in the group.
        probed = [False] * PAGES
        deadline = time.monotonic() + PROBE_LIMIT
        while not all(probed):
            if time.monotonic() > deadline:
                raise RuntimeError("the probe never reached every page")
            await load.publish("bench/probe", json.dumps({"seq": -1}), qos=1)
            for index, page in enumerate(pages):
                if probed[index]:
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await page.recv()
                        probed[index] = True
        readers = [asyncio.create_task(read(i, page)) for i, page in enumerate(pages)]
        window = asyncio.Semaphore(WINDOW)

        async def publish(seq: int) -> None:
            async with window:
                await load.publish("bench/readings", json.dumps({"seq": seq}), qos=1)

        started = time.monotonic()
        publishing = [asyncio.create_task(publish(seq)) for seq in range(MESSAGES)]
        await asyncio.gather(*publishing)
        while not done.is_set() and time.monotonic() - last_arrival[0] < QUIET:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await done.wait()
        wall = (last_arrival[0] if not done.is_set() else time.monotonic()) - started
        for task in readers:
            task.cancel()
        for page in pages:
            await page.close()
    delivered = 100.0 * sum(min(c, MESSAGES) for c in counts) / (MESSAGES * PAGES)
    return MESSAGES / wall, delivered


def run(repeats: int) -> list[Figure]:
    """Both implementations, ``repeats`` times each in rotating order."""
    for tool in ("daphne", "mqttasgi"):
        if not shutil.which(tool, path=os.path.dirname(sys.executable)):
            raise RuntimeError(f"{tool} is missing: pip install -e '.[bench]'")
    throughput = {
        impl: Figure(SUITE, f"broker->consumer->{PAGES} WebSockets", impl, "msg/s")
        for impl in IMPLS
    }
    delivered = {impl: Figure(SUITE, "delivered", impl, "%") for impl in IMPLS}
    with MosquittoServer() as broker, RedisServer() as redis:
        for repeat in range(repeats):
            order = IMPLS[repeat % len(IMPLS) :] + IMPLS[: repeat % len(IMPLS)]
            for impl in order:
                web_port = free_port()
                with _processes(impl, web_port, broker, redis.url):
                    rate, share = asyncio.run(_measure(web_port, broker))
                throughput[impl].samples.append(rate)
                delivered[impl].samples.append(share)
                print(f"  {impl}: {rate:.0f} msg/s, {share:.1f} % delivered", flush=True)
                _flush(redis)
    return [*throughput.values(), *delivered.values()]


def _flush(redis: RedisServer) -> None:
    """Empty Redis between runs (no group or message of one run left for the next)."""
    cli = shutil.which("redis-cli")
    if cli:
        subprocess.run([cli, "-p", str(redis.port), "FLUSHALL"], capture_output=True, check=False)
    else:  # pragma: no cover
        redis.restart()


if __name__ == "__main__":  # pragma: no cover
    from bench._common import emit

    signal.signal(signal.SIGINT, signal.default_int_handler)
    emit(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1))
