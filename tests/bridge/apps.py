"""The applications the bridge tests run on their workers, and a buffering middleware."""

from __future__ import annotations

from typing import Any

from kanal.consumers import AsyncWebsocketConsumer
from kanal.layers import BaseChannelLayer
from kanal.routing import ProtocolTypeRouter
from kanal.typing import ASGIApp, Message, Receive, Scope, Send


class Failure(RuntimeError):
    """What the failing applications raise."""


async def read_body(receive: Receive) -> list[bytes]:
    """The request body, as the parts the application received it in."""
    parts: list[bytes] = []
    while True:
        event = await receive()
        parts.append(event.get("body", b""))
        if not event.get("more_body"):
            return parts


async def http(scope: Scope, receive: Receive, send: Send) -> None:
    """``/boom`` fails; ``/echo`` returns the body whole; anything else describes itself."""
    parts = await read_body(receive)
    body = b"".join(parts)
    if scope["path"] == "/boom":
        raise Failure("the application failed before answering")
    headers = [(b"x-worker", b"yes")]
    if scope["path"] == "/echo":
        headers += [
            (b"x-parts", str(len(parts)).encode()),
            (b"x-largest-part", str(max(map(len, parts))).encode()),
        ]
        answer = body
    else:
        answer = f"{scope['method']} {scope['path']} {len(body)}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def failing_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """Accepts, then fails on the first message from the client."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await receive()
    raise Failure("the application failed on a message")


async def plain_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI echo that knows no extension: it skips events it does not know."""
    while True:
        event = await receive()
        if event["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif event["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": f"plain:{event.get('text')}"})
        elif event["type"] == "websocket.disconnect":
            return


def make_app(layer: BaseChannelLayer) -> ASGIApp:
    """HTTP as :func:`http`; WebSocket ``/boom`` fails, ``/greet`` is a :class:`Greeter`,
    ``/plain`` is :func:`plain_websocket`, any other path is an echo consumer."""

    class Echo(AsyncWebsocketConsumer):
        channel_layer = layer
        groups = ["everyone"]

        async def connect(self) -> None:
            await self.accept()

        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            if text_data == "broadcast":
                await self.channel_layer.group_send("everyone", {"type": "shout", "text": "hi all"})
            else:
                await self.send(text_data=f"echo:{text_data}")

        async def shout(self, message: dict[str, Any]) -> None:
            await self.send(text_data=message["text"])

    echo = Echo.as_asgi()
    greeter = Greeter.as_asgi(channel_layer=layer)

    async def websocket(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/boom":
            await failing_websocket(scope, receive, send)
        elif scope["path"] == "/greet":
            await greeter(scope, receive, send)
        elif scope["path"] == "/plain":
            await plain_websocket(scope, receive, send)
        else:
            await echo(scope, receive, send)

    return ProtocolTypeRouter({"websocket": websocket, "http": http})


def whole_body(app: ASGIApp) -> ASGIApp:
    """Hand ``app`` each request body as one event, as a buffering middleware would."""

    async def buffered(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        body = b"".join(await read_body(receive))
        first: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return first.pop() if first else await receive()

        await app(scope, replay, send)

    return buffered


class Greeter(AsyncWebsocketConsumer):
    """Greets once and tells the room, like the chat; its state moves with a hand-over.

    Every ``connect()`` and ``resume()`` is recorded in :data:`CALLS` (name, hook).
    """

    handover_attributes = ("name",)

    async def connect(self) -> None:
        self.name = bytes(self.scope["query_string"]).decode() or "anon"
        await self.join_group("room")
        await self.accept()
        CALLS.append((self.name, "connect"))
        await self.send(text_data=f"welcome {self.name}")

    async def resume(self, state: dict[str, Any]) -> None:
        await super().resume(state)
        CALLS.append((self.name, "resume"))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert self.channel_layer is not None
        await self.channel_layer.group_send(
            "room", {"type": "said", "text": f"{self.name}: {text_data}"}
        )

    async def said(self, message: dict[str, Any]) -> None:
        await self.send(text_data=message["text"])


#: (name, "connect" or "resume") for each Greeter instance started.
CALLS: list[tuple[str, str]] = []
