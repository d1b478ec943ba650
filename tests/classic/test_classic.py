"""kanal.classic: the original channels API, in-process and through the bridge."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from examples.classic_chat import routing
from tests.child_process import ChildProcess, child_process
from websockets.exceptions import InvalidStatus

from kanal.classic import Channel, ClassicApplication, Group, is_routing, route
from kanal.cli import _classic_or_app
from kanal.exceptions import ConfigError
from kanal.layers import BaseChannelLayer
from kanal.testing import LiveServer, RedisServer, free_port


async def recv(ws: Any) -> Any:
    return await asyncio.wait_for(ws.recv(), 10)


async def test_function_consumers_and_a_group_in_process(
    default_channel_layer: BaseChannelLayer, live_server: Any
) -> None:
    server: LiveServer = await live_server(ClassicApplication(routing))
    url = server.ws_url + "/chat/lobby/"
    ann, bob = await websockets.connect(url), await websockets.connect(url)
    other = await websockets.connect(server.ws_url + "/chat/kitchen/")
    await ann.send("hello")
    assert await recv(ann) == "hello"
    assert await recv(bob) == "hello"
    await other.send("kitchen only")
    assert await recv(other) == "kitchen only"
    await ann.send("marker")  # had the kitchen line reached the lobby, it would come first
    assert await recv(bob) == "marker"
    # Written by the server: the process is the group's one member, not ann and bob.
    assert default_channel_layer.stats().groups["chat-lobby"].delivered == 2
    for ws in (ann, bob, other):
        await ws.close()


async def test_the_class_consumer_joins_its_connection_groups(
    default_channel_layer: BaseChannelLayer, live_server: Any
) -> None:
    server: LiveServer = await live_server(ClassicApplication(routing))
    shouter = await websockets.connect(server.ws_url + "/shout/")
    assert await recv(shouter) == "welcome, shouter"
    listener = await websockets.connect(server.ws_url + "/chat/lobby/")
    await shouter.send("hi all")
    assert await recv(shouter) == "HI ALL"
    assert await recv(listener) == "HI ALL"
    await shouter.close()
    await listener.send("after")
    assert await recv(listener) == "after"
    await listener.close()


async def test_a_connect_consumer_that_closes_refuses_the_handshake(
    default_channel_layer: BaseChannelLayer, live_server: Any
) -> None:
    server: LiveServer = await live_server(ClassicApplication(routing))
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(server.ws_url + "/chat/closed/")
    assert refused.value.response.status_code == 403


async def test_a_reply_channel_is_reachable_by_name_and_groups_work_without_the_extension(
    default_channel_layer: BaseChannelLayer, live_server: Any
) -> None:
    names: list[str] = []

    def remember(message: Any) -> None:
        names.append(message.reply_channel.name)
        Group("everyone").add(message.reply_channel)
        message.reply_channel.send({"text": "ready"})  # accepts, as a first send did

    app = ClassicApplication([route("websocket.connect", remember)])
    # Without the server's extension the group goes through the layer and the listener.
    server: LiveServer = await live_server(app, direct_groups=None)
    async with websockets.connect(server.ws_url + "/") as ws:
        assert await recv(ws) == "ready"
        await asyncio.to_thread(Channel(names[0]).send, {"text": "by name"})
        assert await recv(ws) == "by name"
        await asyncio.to_thread(Group("everyone").send, {"text": "to the group"})
        assert await recv(ws) == "to the group"
        await asyncio.to_thread(Group("everyone").send, {"close": 4000})
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


def test_routing_lists_are_recognised() -> None:
    assert is_routing(routing)
    assert not is_routing([1, 2])
    assert _classic_or_app("examples.classic_chat:routing") == (
        "kanal.classic:application_from_environment()"
    )
    assert _classic_or_app("examples.chat.app:application") == "examples.chat.app:application"
    with pytest.raises(ConfigError):
        route("", print)


@asynccontextmanager
async def kanal(layer_url: str, *args: str, ready: str) -> AsyncIterator[ChildProcess]:
    command = child_process("-m", "kanal.cli", *args, env={"KANAL_LAYER": layer_url})
    async with command as process:
        await process.wait_for(re.escape(ready), within=20)
        yield process


async def _chat_works(port: int) -> None:
    url = f"ws://127.0.0.1:{port}/chat/lobby/"
    async with websockets.connect(url) as ann, websockets.connect(url) as bob:
        await ann.send("across")
        assert await recv(bob) == "across"
        assert await recv(ann) == "across"


@pytest.mark.redis
async def test_kanal_serve_runs_the_routing_list(redis_server: RedisServer) -> None:
    port = free_port()
    serve = ("serve", "examples.classic_chat:routing", "--port", str(port))
    async with kanal(redis_server.url, *serve, ready="ready on"):
        await _chat_works(port)


@pytest.mark.redis
async def test_the_routing_list_runs_decoupled_with_bridge_workers(
    redis_server: RedisServer,
) -> None:
    port = free_port()
    serve = ("serve", "--bridge", "--port", str(port))
    worker = ("worker", "--bridge", "examples.classic_chat:routing")
    async with (
        kanal(redis_server.url, *serve, ready="ready on"),
        kanal(redis_server.url, *worker, ready="bridge worker taking connections"),
    ):
        await _chat_works(port)
