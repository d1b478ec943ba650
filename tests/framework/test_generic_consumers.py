"""The base consumers with raw ASGI events: a worker-style channel scope, sync handlers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kanal.consumers import AsyncConsumer, StopConsumer, SyncConsumer, get_handler_name
from kanal.exceptions import NoHandler
from kanal.layers import InMemoryChannelLayer
from kanal.routing import ChannelNameRouter
from kanal.testing import ApplicationCommunicator


class Thumbnails(AsyncConsumer):
    """Answers each job on its reply channel; stops on ``job.stop``."""

    async def job_resize(self, message: dict[str, Any]) -> None:
        assert self.channel_layer is not None
        await self.channel_layer.send(
            message["reply_channel"], {"type": "job.done", "size": message["size"] // 2}
        )

    async def job_stop(self, message: dict[str, Any]) -> None:
        raise StopConsumer


async def test_async_consumer_in_a_channel_scope(channel_layer: InMemoryChannelLayer) -> None:
    app = ChannelNameRouter({"thumbnails": Thumbnails.as_asgi(channel_layer=channel_layer)})
    communicator = ApplicationCommunicator(app, {"type": "channel", "channel": "thumbnails"})
    reply = await channel_layer.new_channel()
    await communicator.send_input({"type": "job.resize", "size": 640, "reply_channel": reply})
    assert await channel_layer.receive(reply) == {"type": "job.done", "size": 320}
    await communicator.send_input({"type": "job.stop"})
    await communicator.wait()


async def test_sync_consumer_handlers_run_in_a_pool_thread() -> None:
    loop_thread = threading.get_ident()

    class Reporter(SyncConsumer):
        uses_channel_layer = False

        def report_thread(self, message: dict[str, Any]) -> None:
            self.send(
                {
                    "type": "thread",
                    "same": threading.get_ident() == loop_thread,
                    "name": threading.current_thread().name,
                }
            )

    communicator = ApplicationCommunicator(Reporter.as_asgi(), {"type": "custom"})
    await communicator.send_input({"type": "report.thread"})
    output = await communicator.receive_output()
    assert output["same"] is False and output["name"].startswith("kanal-sync")
    await communicator.stop()


def test_handler_names() -> None:
    assert get_handler_name({"type": "chat.message"}) == "chat_message"
    assert get_handler_name({"type": "websocket.receive"}) == "websocket_receive"
    for bad in ({"type": "_private"}, {"type": ""}, {"type": 3}, {}):
        with pytest.raises(NoHandler):
            get_handler_name(bad)
