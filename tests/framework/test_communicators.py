"""The communicators build the scope a real server would."""

from __future__ import annotations

from typing import Any

import pytest

from kanal.testing import HttpCommunicator, WebsocketCommunicator


async def scope_of(kind: str, path: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    communicator: Any = (
        HttpCommunicator(app, "GET", path) if kind == "http" else WebsocketCommunicator(app, path)
    )
    await communicator.wait()
    return seen[0]


@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_path_raw_path_and_query_are_what_a_browser_sends(kind: str) -> None:
    scope = await scope_of(kind, "/caf%C3%A9/李/?name=李&x=a%20b")
    assert scope["path"] == "/café/李/"
    assert scope["raw_path"] == b"/caf%C3%A9/%E6%9D%8E/"
    assert scope["query_string"] == b"name=%E6%9D%8E&x=a%20b"
    plain = await scope_of(kind, "/ws/chat/lobby/?name=ann")
    assert plain["path"] == "/ws/chat/lobby/"
    assert plain["raw_path"] == b"/ws/chat/lobby/"
    assert plain["query_string"] == b"name=ann"
