"""The consumer API of presence: presence_join(), presence(), diffs to handlers and sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from kanal.consumers import AsyncJsonWebsocketConsumer
from kanal.exceptions import ConfigError
from kanal.layers import DirectGroupTransport, InMemoryChannelLayer
from kanal.testing import LiveServer, WebsocketCommunicator, apply_presence_diff


class Lobby(AsyncJsonWebsocketConsumer):
    """Present in the lobby as the ``user`` of its query string; diffs reach its handler."""

    async def connect(self) -> None:
        user = self.scope["query_string"].decode().partition("=")[2]
        await self.join_group("lobby")
        await self.presence_join("lobby", user, {"user": user})
        await self.accept()
        await self.send_json({"state": await self.presence("lobby")})

    async def presence_diff(self, message: dict[str, Any]) -> None:
        await self.send_json({"joins": message["joins"], "leaves": message["leaves"]})


class DirectLobby(AsyncJsonWebsocketConsumer):
    """The same, with diffs written by the server to its direct subscribers."""

    async def connect(self) -> None:
        user = self.scope["query_string"].decode().partition("=")[2]
        await self.subscribe_direct("lobby")
        await self.presence_join("lobby", user, {"user": user}, notify="direct")
        await self.accept()
        await self.send_json({"state": await self.presence("lobby")})


async def _until(receive: Any, state: dict[str, Any], users: set[str]) -> None:
    while set(state) != users:
        apply_presence_diff(state, await receive())


async def test_consumers_join_see_each_other_and_leave_on_disconnect() -> None:
    layer = InMemoryChannelLayer()
    try:
        alice = WebsocketCommunicator(Lobby.as_asgi(channel_layer=layer), "/?user=alice")
        assert (await alice.connect())[0]
        state = (await alice.receive_json_from())["state"]
        assert list(state) == ["alice"]
        bob = WebsocketCommunicator(Lobby.as_asgi(channel_layer=layer), "/?user=bob")
        assert (await bob.connect())[0]
        assert set((await bob.receive_json_from())["state"]) == {"alice", "bob"}
        await _until(alice.receive_json_from, state, {"alice", "bob"})
        await bob.disconnect()
        await _until(alice.receive_json_from, state, {"alice"})
        assert list(await layer.presence("lobby")) == ["alice"]
        await alice.disconnect()
        assert await layer.presence("lobby") == {}
    finally:
        await layer.close()


async def test_direct_diffs_are_written_by_the_server(live_server: Any) -> None:
    layer = InMemoryChannelLayer()
    try:
        server: LiveServer = await live_server(
            DirectLobby.as_asgi(channel_layer=layer),
            direct_groups=lambda deliver: DirectGroupTransport(deliver, layer),
        )

        async def frames(client: Any) -> dict[str, Any]:
            message: dict[str, Any] = json.loads(await asyncio.wait_for(client.recv(), 5))
            return message

        alice = await websockets.connect(server.ws_url + "/?user=alice")
        state = (await frames(alice))["state"]
        async with websockets.connect(server.ws_url + "/?user=bob") as bob:
            assert set((await frames(bob))["state"]) == {"alice", "bob"}
            await _until(lambda: frames(alice), state, {"alice", "bob"})
        await _until(lambda: frames(alice), state, {"alice"})
        # One membership for the process: the diffs went out once, as direct broadcasts.
        assert layer.stats().groups["lobby"].delivered == layer.stats().groups["lobby"].sent
        await alice.close()
    finally:
        await layer.close()


async def test_presence_needs_a_layer() -> None:
    consumer = Lobby(uses_channel_layer=False)
    try:
        await consumer.presence_join("lobby", "alice")
    except ConfigError as exc:
        assert "no channel layer" in str(exc)
    else:
        raise AssertionError("presence_join without a layer did not raise")
