"""Routers: by scope type, by URL (converters, regexes, nesting, root_path), by channel."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from kanal.exceptions import RouteNotFound
from kanal.routing import (
    ChannelNameRouter,
    Converter,
    ProtocolTypeRouter,
    URLRouter,
    path,
    re_path,
    register_converter,
)
from kanal.testing import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator
from kanal.typing import Receive, Scope, Send


class Recorder:
    """An app that records the scope it got and answers 200 (HTTP) or accepts (WebSocket)."""

    def __init__(self, name: str = "app") -> None:
        self.name = name
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await receive()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": self.name.encode()})
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
        else:
            await send({"type": "done", "scope": dict(scope)})


async def get(app: Any, url: str, **scope: Any) -> dict[str, Any]:
    return await HttpCommunicator(app, "GET", url, scope=scope).get_response()


async def test_path_with_typed_converters_fills_url_route() -> None:
    room, user = Recorder("room"), Recorder("user")
    ident = uuid.uuid4()
    app = URLRouter(
        [
            path("rooms/<int:room_id>/", room),
            path("users/<uuid:user>/files/<path:rest>", user),
        ]
    )
    response = await get(app, "/rooms/42/")
    assert response["body"] == b"room"
    assert room.scopes[0]["url_route"] == {"args": (), "kwargs": {"room_id": 42}}

    response = await get(app, f"/users/{ident}/files/a/b.txt")
    assert response["body"] == b"user"
    assert user.scopes[0]["url_route"]["kwargs"] == {"user": ident, "rest": "a/b.txt"}


async def test_converter_mismatch_gives_404_and_a_log_naming_the_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = URLRouter([path("rooms/<int:room_id>/", Recorder())])
    with caplog.at_level(logging.WARNING, logger="kanal.routing"):
        response = await get(app, "/rooms/lobby/")
    assert response["status"] == 404
    assert "rooms/lobby/" in caplog.text
    assert "rooms/<int:room_id>/" in caplog.text


async def test_path_must_match_the_whole_path_and_slash_is_optional() -> None:
    app = URLRouter([path("/chat/", Recorder())])
    assert (await get(app, "/chat/"))["status"] == 200
    assert (await get(app, "/chat/extra"))["status"] == 404
    assert (await get(app, "/cha"))["status"] == 404


async def test_first_matching_route_wins_and_extra_kwargs_are_merged() -> None:
    first, second = Recorder("first"), Recorder("second")
    app = URLRouter([path("a/<slug:s>/", first, kwargs={"mode": "x"}), path("a/<str:s>/", second)])
    assert (await get(app, "/a/ok-slug_1/"))["body"] == b"first"
    assert first.scopes[0]["url_route"]["kwargs"] == {"s": "ok-slug_1", "mode": "x"}
    assert (await get(app, "/a/not.slug/"))["body"] == b"second"


async def test_re_path_named_and_positional_groups() -> None:
    named, positional = Recorder(), Recorder()
    app = URLRouter(
        [
            re_path(r"^named/(?P<year>[0-9]{4})/$", named),
            re_path(r"^pos/([a-z]+)/([0-9]+)/$", positional),
        ]
    )
    await get(app, "/named/2024/")
    assert named.scopes[0]["url_route"] == {"args": (), "kwargs": {"year": "2024"}}
    await get(app, "/pos/abc/7/")
    assert positional.scopes[0]["url_route"] == {"args": ("abc", "7"), "kwargs": {}}
    assert (await get(app, "/named/24/"))["status"] == 404


async def test_nested_routers_merge_kwargs_and_match_the_rest() -> None:
    leaf = Recorder("leaf")
    inner = URLRouter([path("items/<int:item>/", leaf)])
    app = URLRouter([path("shops/<slug:shop>/", inner)])
    response = await get(app, "/shops/bakery/items/3/")
    assert response["body"] == b"leaf"
    assert leaf.scopes[0]["url_route"]["kwargs"] == {"shop": "bakery", "item": 3}
    assert "path_remaining" not in leaf.scopes[0]
    assert (await get(app, "/shops/bakery/items/x/"))["status"] == 404


async def test_root_path_is_removed_before_matching() -> None:
    leaf = Recorder()
    app = URLRouter([path("ws/<str:room>/", leaf)])
    response = await get(app, "/prefix/ws/lobby/", root_path="/prefix")
    assert response["status"] == 200
    assert leaf.scopes[0]["url_route"]["kwargs"] == {"room": "lobby"}


async def test_root_path_is_removed_only_as_whole_segments() -> None:
    leaf = Recorder()
    app = URLRouter([path("room/<str:name>/", leaf), path("", Recorder("root"))])
    # "/chatroom/x/" does not start with the mount point "/chat": it is not routed as "room/x/".
    assert (await get(app, "/chatroom/x/", root_path="/chat"))["status"] == 404
    assert not leaf.scopes
    assert (await get(app, "/chat/room/x/", root_path="/chat/"))["status"] == 200
    assert (await get(app, "/chat", root_path="/chat"))["body"] == b"root"


async def test_custom_converter() -> None:
    class Upper(Converter):
        regex = "[A-Z]+"

        def to_python(self, value: str) -> str:
            return value.lower()

    register_converter(Upper, "upper")
    leaf = Recorder()
    app = URLRouter([path("c/<upper:code>/", leaf)])
    assert (await get(app, "/c/ABC/"))["status"] == 200
    assert leaf.scopes[0]["url_route"]["kwargs"] == {"code": "abc"}
    assert (await get(app, "/c/abc/"))["status"] == 404


def test_bad_patterns_are_rejected_with_the_pattern_named() -> None:
    with pytest.raises(ValueError, match="unknown converter 'nope'"):
        path("x/<nope:y>/", Recorder())
    with pytest.raises(ValueError, match="twice"):
        path("<int:a>/<int:a>/", Recorder())
    with pytest.raises(ValueError, match=r"does not compile"):
        re_path("([", Recorder())
    with pytest.raises(TypeError, match=r"needs an ASGI application"):
        path("x/", "not an app")  # type: ignore[arg-type]


async def test_unmatched_websocket_is_denied(caplog: pytest.LogCaptureFixture) -> None:
    app = URLRouter([path("ws/chat/<str:room>/", Recorder())])
    communicator = WebsocketCommunicator(app, "/ws/other/")
    with caplog.at_level(logging.WARNING, logger="kanal.routing"):
        connected, _code = await communicator.connect()
    assert connected is False
    assert "handshake denied" in caplog.text and "ws/other/" in caplog.text
    await communicator.wait()


async def test_protocol_type_router_dispatches_by_type_and_acknowledges_lifespan() -> None:
    http_app, ws_app = Recorder("http"), Recorder("ws")
    app = ProtocolTypeRouter({"http": http_app, "websocket": ws_app})
    assert (await get(app, "/"))["body"] == b"http"
    ws = WebsocketCommunicator(app, "/")
    assert (await ws.connect())[0] is True
    await ws.stop()
    assert len(ws_app.scopes) == 1

    lifespan = ApplicationCommunicator(app, {"type": "lifespan"})
    await lifespan.send_input({"type": "lifespan.startup"})
    assert await lifespan.receive_output() == {"type": "lifespan.startup.complete"}
    await lifespan.send_input({"type": "lifespan.shutdown"})
    assert await lifespan.receive_output() == {"type": "lifespan.shutdown.complete"}
    await lifespan.wait()


async def test_protocol_type_router_without_http_answers_404() -> None:
    app = ProtocolTypeRouter({"websocket": Recorder()})
    response = await get(app, "/")
    assert response["status"] == 404


def test_protocol_type_router_rejects_a_consumer_class_by_name() -> None:
    from kanal.consumers import AsyncWebsocketConsumer

    with pytest.raises(TypeError, match="as_asgi"):
        URLRouter([path("ws/", AsyncWebsocketConsumer)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'websocket' is not callable"):
        ProtocolTypeRouter({"websocket": 3})  # type: ignore[dict-item]


async def test_channel_name_router() -> None:
    thumbs = Recorder("thumbs")
    app = ChannelNameRouter({"thumbnails": thumbs})
    communicator = ApplicationCommunicator(app, {"type": "channel", "channel": "thumbnails"})
    assert (await communicator.receive_output())["type"] == "done"
    assert thumbs.scopes[0]["channel"] == "thumbnails"

    missing = ApplicationCommunicator(app, {"type": "channel", "channel": "emails"})
    with pytest.raises(RouteNotFound, match=r"no consumer for channel .emails.*thumbnails"):
        await missing.wait()
