"""The chat example's consumer, through communicators (no server, no browser)."""

from __future__ import annotations

from typing import Any

from examples.chat.app import application
from examples.chat.consumers import clean_name

from kanal.layers import BaseChannelLayer
from kanal.testing import HttpCommunicator, WebsocketCommunicator

ORIGIN = [("origin", "http://127.0.0.1:8000")]


def plain(event: dict[str, Any]) -> dict[str, Any]:
    """An event without its position (the room's history gives every one its own)."""
    return {key: value for key, value in event.items() if key != "position"}


async def receive(communicator: WebsocketCommunicator) -> dict[str, Any]:
    return plain(await communicator.receive_json_from())


async def join(room: str, name: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        application, f"/ws/chat/{room}/?name={name}", headers=ORIGIN
    )
    connected, _ = await communicator.connect()
    assert connected
    welcome = await communicator.receive_json_from()
    assert plain(welcome) == {"kind": "welcome", "name": name, "room": room}
    assert await receive(communicator) == {"kind": "join", "name": name}
    return communicator


async def test_rooms_are_separate_and_notices_go_to_the_room(
    default_channel_layer: BaseChannelLayer,
) -> None:
    ann = await join("lobby", "ann")
    bob = await join("lobby", "bob")
    assert await receive(ann) == {"kind": "join", "name": "bob"}
    cid = await join("kitchen", "cid")

    await ann.send_json_to({"text": "  hello  "})
    for member in (ann, bob):
        line: dict[str, Any] = await member.receive_json_from()
        assert (line["kind"], line["name"], line["text"]) == ("message", "ann", "hello")
    # cid's next event is its own line, not ann's: the layer keeps order per channel.
    await cid.send_json_to({"text": "kitchen only"})
    assert (await cid.receive_json_from())["text"] == "kitchen only"
    # Absence proved by order, not by waiting: had cid's line reached the lobby, it would
    # come before this marker, which is sent after it.
    await ann.send_json_to({"text": "marker"})
    for member in (ann, bob):
        assert (await member.receive_json_from())["text"] == "marker"

    await bob.disconnect()
    assert await receive(ann) == {"kind": "leave", "name": "bob"}
    await cid.send_json_to({"text": "kitchen marker"})
    assert (await cid.receive_json_from())["text"] == "kitchen marker"  # no "bob left"
    await ann.disconnect()
    await cid.disconnect()


async def test_bad_lines_get_an_error_and_the_connection_stays(
    default_channel_layer: BaseChannelLayer,
) -> None:
    ann = await join("lobby", "ann")
    await ann.send_json_to({"nope": 1})
    assert (await ann.receive_json_from())["kind"] == "error"
    await ann.send_json_to({"text": "x" * 2001})
    assert (await ann.receive_json_from())["error"] == "at most 2000 characters"
    await ann.send_json_to({"text": "still here"})
    assert (await ann.receive_json_from())["text"] == "still here"
    await ann.disconnect()


async def test_foreign_origin_is_refused(default_channel_layer: BaseChannelLayer) -> None:
    evil = WebsocketCommunicator(
        application, "/ws/chat/lobby/?name=x", headers=[("origin", "https://evil.example")]
    )
    assert (await evil.connect())[0] is False


async def test_pages_are_served_and_unknown_paths_are_404() -> None:
    page = await HttpCommunicator(application, "GET", "/rooms/lobby/").get_response()
    assert page["status"] == 200 and b"<title>kanal chat</title>" in page["body"]
    script = await HttpCommunicator(application, "GET", "/static/chat.js").get_response()
    assert (b"content-type", b"text/javascript; charset=utf-8") in script["headers"]
    assert (await HttpCommunicator(application, "GET", "/rooms/a b/").get_response())[
        "status"
    ] == 404


def test_names_are_cleaned() -> None:
    assert clean_name("  ann\x00\n ") == "ann"
    assert clean_name("x" * 50) == "x" * 32
    assert clean_name("").startswith("guest-")


async def test_joins_at_once_make_one_notice_not_one_per_newcomer(
    default_channel_layer: BaseChannelLayer,
) -> None:
    # Every newcomer's notice goes to every member: sent one by one, a room filling up
    # costs O(n^2) frames. Joins within a moment come as one notice.
    members = []
    for n in range(5):
        communicator = WebsocketCommunicator(
            application, f"/ws/chat/big/?name=m{n}", headers=ORIGIN
        )
        assert (await communicator.connect())[0]
        assert (await communicator.receive_json_from())["kind"] == "welcome"
        members.append(communicator)
    for member in members:
        notice = await receive(member)
        assert notice == {"kind": "join", "names": [f"m{n}" for n in range(5)], "count": 5}
    await members[0].send_json_to({"text": "after the notice"})
    for member in members:
        assert (await member.receive_json_from())["text"] == "after the notice"
        await member.disconnect()


async def test_a_page_that_reconnects_gets_the_lines_it_missed_once(
    default_channel_layer: BaseChannelLayer,
) -> None:
    ann = await join("lobby", "ann")
    bob = await join("lobby", "bob")
    assert await receive(ann) == {"kind": "join", "name": "bob"}
    await ann.send_json_to({"text": "before"})
    await ann.receive_json_from()
    last = (await bob.receive_json_from())["position"]  # what bob's page remembers
    await bob.disconnect()
    assert await receive(ann) == {"kind": "leave", "name": "bob"}
    for text in ("while away 1", "while away 2"):
        await ann.send_json_to({"text": text})
        assert (await ann.receive_json_from())["text"] == text

    back = WebsocketCommunicator(
        application, f"/ws/chat/lobby/?name=bob&since={last}", headers=ORIGIN
    )
    assert (await back.connect())[0]
    events = [await back.receive_json_from() for _ in range(4)]
    assert [(e["kind"], e.get("text", e.get("name"))) for e in events] == [
        ("leave", "bob"),  # what came after bob's last line, in order
        ("message", "while away 1"),
        ("message", "while away 2"),
        ("welcome", "bob"),
    ]
    assert events[-1]["position"] == events[-2]["position"]  # where the page resumes from
    # Rooms keep history; their groups of presence diffs do not.
    assert default_channel_layer.history_policy("chat.lobby") is not None
    assert default_channel_layer.history_policy("chat.lobby.online") is None
    await ann.send_json_to({"text": "live again"})
    # bob's join notice is gathered over a moment: it may come before or after the line.
    live = sorted([await receive(back), await receive(back)], key=lambda e: str(e["kind"]))
    assert [(e["kind"], e.get("text", e.get("name"))) for e in live] == [
        ("join", "bob"),
        ("message", "live again"),
    ]
    # Nothing twice: had a line come again, it would come before this marker.
    await ann.send_json_to({"text": "marker"})
    assert (await back.receive_json_from())["text"] == "marker"
    await back.disconnect()
    await ann.disconnect()


async def test_a_page_too_far_behind_is_told_so(default_channel_layer: BaseChannelLayer) -> None:
    ann = await join("lobby", "ann")
    gone = "0123abcd:5"  # a position of another epoch: a restarted memory:// server's
    back = WebsocketCommunicator(
        application, f"/ws/chat/lobby/?name=bob&since={gone}", headers=ORIGIN
    )
    assert (await back.connect())[0]
    missed = await back.receive_json_from()
    welcome = await back.receive_json_from()
    assert missed["kind"] == "missed" and welcome["kind"] == "welcome"
    assert missed["position"].split(":")[0] != "0123abcd"
    await back.disconnect()
    await ann.disconnect()
