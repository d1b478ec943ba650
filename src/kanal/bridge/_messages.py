"""The bridge's vocabulary: the message types, the wire format of each, and builders.

Every message is a layer message (a msgpack-serialisable dict) with a ``type``. Four
channels carry them, all process-specific except the first:

- ``kanal.bridge`` (:data:`BRIDGE_CHANNEL`): servers, and stopping workers, announce
  connections there; every bridge worker takes from it.
- the connection's *reply* channel, read by its server: what the worker sends it.
- the connection's *inbound* channel, read by the worker that holds it: what the server
  sends it. Each worker that takes the connection over makes a new one.
- each bridge process's *control* channel (one per server process, one per worker): the
  heartbeats of the processes it shares connections with.

The types, who sends each where, and their fields besides ``type``:

``bridge.open`` (server -> ``kanal.bridge``)
    A new connection. ``conn``: str, its id; ``reply``: str, the server's channel for it;
    ``control``: str, the server's control channel; ``scope``: bytes, the scope packed
    by :func:`~kanal.bridge._scope.pack_scope` (or a dict from
    :func:`~kanal.bridge.scope_to_wire`); ``events``: list, the first client event when it
    is small (else empty: it follows as ``bridge.receive``); ``resume``: ``False``.
    Sent again to resume a WebSocket on the next worker, with ``resume``: ``True``;
    ``pending``: list, client events replayed first; ``state``: the application's state
    from ``websocket.suspended`` (a dict), or ``None`` to replay ``websocket.connect``;
    ``groups``: list of str, the groups to rejoin with ``state``; ``accepted``: bool, the
    client was accepted already (its next ``websocket.accept`` is not sent). A stopping
    worker sends it (worker -> ``kanal.bridge``); so does a server whose worker died
    (with a new ``reply``, ``state``: ``None``).
``bridge.attached`` (worker -> reply)
    ``conn``: str; ``inbound``: str, where the connection's events go from now on;
    ``control``: str, the worker's control channel.
``bridge.receive`` (server -> inbound)
    ``event``: dict, one ASGI event from the client. An HTTP body larger than the chunk
    size crosses as several events with ``more_body``.
``bridge.send`` (worker -> reply)
    ``event``: dict, one ASGI event for the client, bodies chunked the same way.
``bridge.batch`` (worker -> reply)
    ``items``: list of worker -> reply messages, in order, crossing the layer as one.
``bridge.done`` (worker -> reply)
    No fields: the application returned (not sent after a complete HTTP response).
``bridge.error`` (worker -> reply)
    ``error``: str, the repr of the exception the application raised.
``bridge.detach`` (worker -> reply)
    ``conn``: str. The worker hands the connection over: hold its events.
``bridge.detach_ack`` (server -> inbound)
    No fields: nothing more follows on this inbound channel.
``bridge.suspend`` (worker -> its own inbound)
    No fields: the worker stops; the application gets ``websocket.suspend`` once it has
    handled the events before this one.
``bridge.alive`` (server or worker -> the other's control channel)
    ``sender``: str, the sender's control channel; ``every``: float, seconds between two
    of its heartbeats; ``conns``: list of str, the connections it holds with the receiver.

The builders below are the only places that spell a message out.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from kanal.layers import Message
from kanal.typing import Message as Event

__all__ = [
    "BRIDGE_CHANNEL",
    "DISCONNECTS",
    "MessageType",
    "alive_message",
    "attached_message",
    "batch_message",
    "detach_ack_message",
    "detach_message",
    "done_message",
    "error_message",
    "open_message",
    "receive_message",
    "resume_message",
    "send_message",
    "suspend_message",
    "unbatch",
]

#: Where servers announce connections and workers take them from.
BRIDGE_CHANNEL = "kanal.bridge"

#: The ASGI events that end a connection from the client's side.
DISCONNECTS = frozenset({"http.disconnect", "websocket.disconnect"})


class MessageType(enum.StrEnum):
    """The ``type`` of each bridge message (see the module's table for their fields)."""

    OPEN = "bridge.open"
    ATTACHED = "bridge.attached"
    RECEIVE = "bridge.receive"
    SEND = "bridge.send"
    BATCH = "bridge.batch"
    DONE = "bridge.done"
    ERROR = "bridge.error"
    DETACH = "bridge.detach"
    DETACH_ACK = "bridge.detach_ack"
    SUSPEND = "bridge.suspend"
    ALIVE = "bridge.alive"


def open_message(
    conn: str,
    reply: str,
    control: str,
    scope: bytes | dict[str, Any],
    events: Sequence[Event],
    log_id: str | None = None,
) -> Message:
    """``bridge.open``: a new connection, with the client events that ride along.

    ``log_id`` is the connection's id in the server's logs: the worker's lines about the
    connection carry the same one.
    """
    message: Message = {
        "type": MessageType.OPEN.value,
        "conn": conn,
        "reply": reply,
        "control": control,
        "scope": scope,
        "events": list(events),
        "resume": False,
    }
    if log_id is not None:
        message["log_id"] = log_id
    return message


def resume_message(
    announcement: Message,
    pending: Sequence[Event],
    *,
    state: dict[str, Any] | None,
    groups: Sequence[str] = (),
    accepted: bool = True,
    reply: str | None = None,
) -> Message:
    """``bridge.open`` again, for the next worker: ``pending`` are replayed before the rest.

    ``state`` (from the application's ``websocket.suspended``) resumes the connection
    without ``websocket.connect``; ``None`` replays ``websocket.connect`` instead.
    """
    message: Message = {
        **announcement,
        "events": [],
        "resume": True,
        "pending": list(pending),
        "state": state,
        "groups": list(groups),
        "accepted": accepted,
    }
    if reply is not None:
        message["reply"] = reply
    return message


def attached_message(conn: str, inbound: str, control: str) -> Message:
    """``bridge.attached``: a worker holds the connection and reads ``inbound``."""
    return {
        "type": MessageType.ATTACHED.value,
        "conn": conn,
        "inbound": inbound,
        "control": control,
    }


def receive_message(event: Event) -> Message:
    """``bridge.receive``: one client event for the application."""
    return {"type": MessageType.RECEIVE.value, "event": event}


def send_message(event: Event) -> Message:
    """``bridge.send``: one application event for the client."""
    return {"type": MessageType.SEND.value, "event": event}


def batch_message(items: Sequence[Message]) -> Message:
    """``bridge.batch``: several worker messages crossing the layer as one."""
    return {"type": MessageType.BATCH.value, "items": list(items)}


def done_message() -> Message:
    """``bridge.done``: the application instance returned."""
    return {"type": MessageType.DONE.value}


def error_message(error: BaseException) -> Message:
    """``bridge.error``: the application instance raised ``error``."""
    return {"type": MessageType.ERROR.value, "error": repr(error)}


def detach_message(conn: str) -> Message:
    """``bridge.detach``: the worker hands the connection over; hold its events."""
    return {"type": MessageType.DETACH.value, "conn": conn}


def detach_ack_message() -> Message:
    """``bridge.detach_ack``: the last message on the old inbound channel."""
    return {"type": MessageType.DETACH_ACK.value}


def suspend_message() -> Message:
    """``bridge.suspend``: the worker stops; suspend the application when it is ready."""
    return {"type": MessageType.SUSPEND.value}


def alive_message(sender: str, every: float, conns: Sequence[str]) -> Message:
    """``bridge.alive``: ``sender`` is alive and holds ``conns`` with the receiver."""
    return {
        "type": MessageType.ALIVE.value,
        "sender": sender,
        "every": every,
        "conns": list(conns),
    }


def unbatch(message: Message) -> list[Message]:
    """The messages in a message from a worker (a ``bridge.batch`` holds several)."""
    if message.get("type") == MessageType.BATCH:
        items: list[Message] = message["items"]
        return items
    return [message]
