"""The consumer core: one instance per connection, handlers dispatched by message ``type``."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
import threading
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync

from kanal.consumers._presence import PresenceMixin
from kanal.consumers._recovery import GroupPositions
from kanal.consumers._threads import run_sync
from kanal.exceptions import ConfigError, HistoryGap, LayerUnavailable, NoHandler, StopConsumer
from kanal.layers import DEFAULT_GROUP_EXPIRY, BaseChannelLayer, Position, get_channel_layer
from kanal.typing import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AsyncConsumer", "SyncConsumer", "get_handler_name"]

logger = logging.getLogger("kanal.consumers")

# 5 s: long enough for a database write or a group_discard over a slow network, and
# shorter than the 10 s after which servers (Daphne, kanal's own) kill an application
# that will not finish, so that our log, which says where it was stuck, comes first.
DEFAULT_DISCONNECT_TIMEOUT = 5.0

# At most this many layer messages handled in one go after a receive (see _run): enough
# to turn a backlog into few wake-ups and writes, few enough that a batch ends quickly.
_BATCH = 64


def get_handler_name(message: Message) -> str:
    """``{"type": "chat.message"}`` -> ``"chat_message"``; :class:`NoHandler` if impossible."""
    kind = message.get("type") if isinstance(message, dict) else None
    if not isinstance(kind, str) or not kind:
        shown = repr(message)
        if len(shown) > 200:  # a large message would flood the log line
            shown = shown[:200] + "...}"
        raise NoHandler(f"message has no 'type' key: {shown}", message_type=kind)
    if kind.startswith("_"):
        raise NoHandler(f"message type {kind!r} starts with an underscore", message_type=kind)
    return kind.replace(".", "_")


def _describe_message_type(message: object) -> str:
    if isinstance(message, dict) and "type" in message:
        return repr(message["type"])
    return "(no type)"


_API_NAMES: dict[type, frozenset[str]] = {}
# Per consumer class: message type -> handler method name, for types already dispatched.
_HANDLER_NAMES: dict[type, dict[str, str]] = {}
_MAX_HANDLER_NAMES = 256


def _api_names(cls: type) -> frozenset[str]:
    """Methods of kanal's consumer classes that are API, not handlers.

    A message must never reach them: a layer message of type ``"close"`` would otherwise
    call ``close()``. Protocol handlers (``websocket_*``, ``http_*``, ``mqtt_*``) stay
    reachable, and so does ``kanal_direct`` (direct delivery without the server's extension).
    """
    cached = _API_NAMES.get(cls)
    if cached is not None:
        return cached
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("kanal.consumers."):
            names.update(
                name
                for name in vars(klass)
                if not name.startswith(("websocket_", "http_", "mqtt_")) and name != "kanal_direct"
            )
    _API_NAMES[cls] = result = frozenset(names)
    return result


class _ConsumerBase(PresenceMixin):
    """What async and sync consumers share: the receive loop, dispatch and error handling."""

    #: The channel layer; ``None`` means ``get_channel_layer(channel_layer_url)``.
    channel_layer: BaseChannelLayer | None = None
    #: URL of the layer to use (``None``: ``$KANAL_LAYER``, else ``memory://``).
    channel_layer_url: str | None = None
    #: Set to ``False`` for a consumer that neither has a channel nor joins groups.
    uses_channel_layer: bool = True
    #: Seconds that disconnect handling may take before it is cancelled and logged.
    disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT
    #: True once sending failed because the client had gone away.
    client_gone: bool = False

    channel_name: str
    scope: Scope
    base_send: Send

    def __init__(self, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            setattr(self, key, value)

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> ASGIApp:
        """An ASGI application that runs a new instance of this consumer per connection.

        ``initkwargs`` set attributes on each instance; every key must be an attribute the
        class already has (a typo would otherwise pass silently).
        """
        for key in initkwargs:
            if not hasattr(cls, key):
                raise TypeError(
                    f"{cls.__name__}.as_asgi() got {key!r}, which is not an attribute of "
                    f"{cls.__name__}"
                )

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await cls(**initkwargs)(scope, receive, send)

        app.consumer_class = cls  # type: ignore[attr-defined]
        app.consumer_initkwargs = initkwargs  # type: ignore[attr-defined]
        app.__name__ = f"{cls.__name__}.as_asgi()"
        app.__qualname__ = app.__name__
        app.__doc__ = cls.__doc__
        return app

    # -- running ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run this consumer for one connection until it stops."""
        self.scope = scope

        async def guarded(message: Message) -> None:
            try:
                await send(message)
            except OSError:
                # The server says the client is gone (kanal's ClientDisconnected, uvicorn's
                # ClientDisconnected...): a race with the disconnect event, not a bug.
                self.client_gone = True
                raise

        self.base_send = self._track_send(guarded)
        layer_receive: Callable[[], Awaitable[Message]] | None = None
        layer_take: Callable[[], Message | None] | None = None
        if self.uses_channel_layer:
            if self.channel_layer is None:
                self.channel_layer = get_channel_layer(self.channel_layer_url)
            self.channel_name = await self.channel_layer.new_channel()
            layer_receive = functools.partial(self.channel_layer.receive, self.channel_name)
            take = getattr(self.channel_layer, "receive_nowait", None)
            if take is not None:  # a Channels layer has none: one message per receive
                layer_take = functools.partial(take, self.channel_name)
        try:
            await self._run(receive, layer_receive, layer_take)
        finally:
            await self._cleanup()

    async def _run(
        self,
        receive: Receive,
        layer_receive: Callable[[], Awaitable[Message]] | None,
        layer_take: Callable[[], Message | None] | None = None,
    ) -> None:
        # One long-lived task per source feeds one inbox. A source takes its next message
        # only once the consumer has handled the previous one (its "turn"), so a consumer
        # never holds more than one message per source and the layer's capacity still
        # pushes back. Per message this costs two wake-ups, instead of a new task and an
        # asyncio.wait() over both sources (measured: about a third of a delivery's CPU).
        #
        # A consumer that is behind (its channel holds a backlog) takes up to _BATCH more
        # layer messages with ``receive_nowait`` after each layer message, without a
        # wake-up each; the server then writes what these handlers sent as one write. The
        # client's messages still come first: a batch ends as soon as one is waiting.
        loop = asyncio.get_running_loop()
        inbox: deque[tuple[str, Message | Exception]] = deque()
        wakeup: list[asyncio.Future[None] | None] = [None]
        turns: dict[str, asyncio.Future[None]] = {}

        def deliver(name: str, item: Message | Exception) -> None:
            inbox.append((name, item))
            waiter = wakeup[0]
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        async def pump(name: str, source: Callable[[], Awaitable[Message]]) -> None:
            while True:
                try:
                    message = await source()
                except Exception as exc:
                    deliver(name, exc)
                    return
                turn = turns[name] = loop.create_future()
                deliver(name, message)
                await turn

        sources: dict[str, Callable[[], Awaitable[Message]]] = {"client": receive}
        if layer_receive is not None:
            sources["layer"] = layer_receive
        pumps = [asyncio.create_task(pump(name, source)) for name, source in sources.items()]
        try:
            while True:
                if not inbox:
                    waiter = wakeup[0] = loop.create_future()
                    await waiter
                    wakeup[0] = None
                    continue
                name, item = inbox.popleft()
                if isinstance(item, Exception):
                    # Logged by _fail as "failed on message type 'layer.receive'".
                    await self._fail(item, {"type": f"{name}.receive"})
                    return
                if not await self._handle(item):
                    return
                if name == "layer" and layer_take is not None:
                    for _ in range(_BATCH):
                        if inbox:
                            break
                        try:
                            more = layer_take()
                        except Exception as exc:  # e.g. a message it cannot decrypt
                            await self._fail(exc, {"type": "layer.receive"})
                            return
                        if more is None:
                            break
                        if not await self._handle(more):
                            return
                turn = turns.pop(name)
                if not turn.done():
                    turn.set_result(None)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    #: The histories this consumer follows (groups joined with history), once it has one.
    _positions: GroupPositions | None = None

    async def _handle(self, message: Message) -> bool:
        """Dispatch one message; ``False`` if the consumer is done (stopped or failed)."""
        positions = self._positions
        if positions is not None and type(message) is dict and "position" in message:
            # A message of a group with history: handled once, and gaps filled first.
            return await positions.admit(
                message, self.channel_layer, self._handle_one, self._history_gap
            )
        return await self._handle_one(message)

    async def _handle_one(self, message: Message) -> bool:
        try:
            await self.dispatch(message)
        except StopConsumer:
            return False
        except LayerUnavailable as exc:
            # The layer was unreachable for longer than it waits (a Redis outage past its
            # outage_timeout): the client is fine, so its connection stays.
            return await self._layer_unavailable(exc, message)
        except Exception as exc:
            await self._fail(exc, message)
            return False
        return True

    async def _layer_unavailable(self, exc: LayerUnavailable, message: Message) -> bool:
        """Log a handler's ``LayerUnavailable`` and call :meth:`on_layer_unavailable`;
        ``False`` (the consumer ends, as for any failure) if that hook raises."""
        logger.warning(
            "%s: the channel layer was unavailable while handling message type %s: %s; "
            "the connection stays open",
            type(self).__name__,
            _describe_message_type(message),
            exc,
        )
        try:
            await self._call(self.on_layer_unavailable, exc, message)
        except StopConsumer:
            return False
        except Exception as error:
            await self._fail(error, message)
            return False
        return True

    def on_layer_unavailable(self, exc: LayerUnavailable, message: Message) -> Any:
        """Called when a handler raised ``LayerUnavailable``: the channel layer could not be
        reached within its bounds, so what the handler sent through it is lost (the layer
        counted it as dropped). The connection stays open; override this to tell the
        client (the default does nothing more than the warning logged)."""

    async def dispatch(self, message: Message) -> None:
        """Call the handler for ``message["type"]`` (``a.b`` -> ``a_b``)."""
        handler = self._handler_for(message)
        await self._call(handler, message)

    def _handler_for(self, message: Message) -> Callable[..., Any]:
        # The per-message path of every consumer: the method name of a message type this
        # class has handled before is looked up, not worked out and checked again.
        known = _HANDLER_NAMES.get(type(self))
        kind = message.get("type") if type(message) is dict else None
        if known is not None and type(kind) is str:
            name = known.get(kind)
            if name is not None:
                handler = getattr(self, name, None)
                if callable(handler):
                    return handler  # type: ignore[no-any-return]
        try:
            name = get_handler_name(message)
        except NoHandler as exc:
            raise NoHandler(
                f"{type(self).__name__}: {exc}",
                consumer=type(self).__name__,
                message_type=exc.message_type,
            ) from None
        handler = None if name in _api_names(type(self)) else getattr(self, name, None)
        if handler is None or not callable(handler):
            raise NoHandler(
                f"{type(self).__name__} has no handler {name}() for message type "
                f"{message['type']!r}",
                consumer=type(self).__name__,
                message_type=message["type"],
            )
        names = _HANDLER_NAMES.setdefault(type(self), {})
        if len(names) < _MAX_HANDLER_NAMES:  # message types are few; bounded all the same
            names[message["type"]] = name
        return handler  # type: ignore[no-any-return]

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a handler or hook (async consumers: on the loop)."""
        result = function(*args)
        if inspect.isawaitable(result):
            return await result
        return result

    # -- failure and shutdown -------------------------------------------------------------------

    async def _fail(self, exc: BaseException, message: Message) -> None:
        """Log a failed message naming the consumer and type, and end this connection."""
        if self.client_gone:
            logger.debug(
                "%s: the client went away while handling message type %s",
                type(self).__name__,
                _describe_message_type(message),
            )
        else:
            logger.error(
                "%s failed on message type %s: %s",
                type(self).__name__,
                _describe_message_type(message),
                exc,
                # A missing handler is a programming slip, its message says it all.
                exc_info=None if isinstance(exc, NoHandler) else exc,
            )
        try:
            await self.on_failure(exc, message)
        except Exception:
            logger.exception(
                "%s: closing the connection after a failure failed", type(self).__name__
            )

    async def on_failure(self, exc: BaseException, message: Message) -> None:
        """Close the connection after a failed message (protocol consumers override it)."""

    # -- groups ---------------------------------------------------------------------------

    async def join_group(
        self, group: str, *, since: Position | str | None = None
    ) -> Position | None:
        """Add this connection's channel to ``group``, for as long as the consumer runs.

        The membership is renewed every ``group_expiry / 2`` seconds (a day's connection
        would otherwise drop out of its groups silently) and left when the consumer ends.

        For a group with history (docs/history.md) it returns the group's position, and
        each of the group's messages reaches the handlers once, in order (a live one that
        skips some brings the missing ones from the history first). ``since``, a position
        the client saw last, first hands the messages published after it to the handlers
        (call it after ``accept()``, so that what they send can go out), then the live
        ones; raises ``HistoryGap``/``EpochChanged`` (the client should reload) with the
        membership made and the group followed from the current position.
        """
        if self.channel_layer is None:
            raise ConfigError(
                f"{type(self).__name__} cannot join group {group!r}: it has no channel layer "
                "(uses_channel_layer is False)"
            )
        await self.channel_layer.group_add(group, self.channel_name)
        joined: list[str] = self.__dict__.setdefault("_joined", [])
        if group not in joined:
            joined.append(group)
        if self.__dict__.get("_renewal") is None:
            self._renewal: asyncio.Task[None] | None = asyncio.ensure_future(self._renew_groups())
        return await self._follow(group, since)

    async def _follow(self, group: str, since: Position | str | None) -> Position | None:
        """Subscribed already: catch up from ``since``, then follow the group's positions."""
        layer = self.channel_layer
        assert layer is not None
        policy = getattr(layer, "history_policy", None)  # a Channels layer has none
        if since is None and (policy is None or policy(group) is None):
            return None
        positions = self._positions
        if positions is None:
            positions = self._positions = GroupPositions()
        if since is None:
            position = (await layer.group_history(group, limit=0)).position
            positions.follow(group, position)
            return position
        start = Position.parse(since)
        try:
            history = await layer.group_history(group, since=start)
        except HistoryGap as exc:
            if isinstance(exc.position, Position):
                positions.follow(group, exc.position)
            raise
        positions.follow(group, start)
        if not await positions.replay(group, history, self._handle_one):
            raise StopConsumer
        return positions.position(group)

    async def _history_gap(self, group: str, exc: HistoryGap) -> None:
        logger.warning(
            "%s: messages of group %r were lost on the way and are no longer in its history: %s",
            type(self).__name__,
            group,
            exc,
        )
        await self._call(self.on_history_gap, group, exc)

    def on_history_gap(self, group: str, exc: HistoryGap) -> Any:
        """Live messages of ``group`` were lost on the way (a full channel) and its history
        no longer has them either: tell the client to reload, say. ``exc.position`` is
        where the group is now. The default does nothing more than the warning logged."""

    async def leave_group(self, group: str) -> None:
        """Remove this connection's channel from ``group`` (silent if it was not a member)."""
        joined: list[str] = self.__dict__.get("_joined", [])
        if group in joined:
            joined.remove(group)
        if self._positions is not None:
            self._positions.forget(group)
        if self.channel_layer is not None:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _join_declared_groups(self, groups: list[str]) -> None:
        for group in groups:
            await self.join_group(group)

    async def _renew_groups(self) -> None:
        layer = self.channel_layer
        assert layer is not None
        interval = float(getattr(layer, "group_expiry", DEFAULT_GROUP_EXPIRY)) / 2
        while True:
            await asyncio.sleep(interval)
            for group in list(self.__dict__.get("_joined", [])):
                try:
                    await layer.group_add(group, self.channel_name)
                except Exception as exc:
                    logger.warning(
                        "%s: renewing membership of group %r failed: %r",
                        type(self).__name__,
                        group,
                        exc,
                    )

    async def _leave_groups(self) -> None:
        await self._leave_presences()  # before groups: the leaves still reach the members
        renewal = self.__dict__.get("_renewal")
        if renewal is not None:
            renewal.cancel()
            self._renewal = None
        joined: list[str] = self.__dict__.get("_joined", [])
        layer = self.channel_layer
        if not joined or layer is None:
            return
        try:
            # Part of disconnect handling, so under the same deadline: a layer that hangs
            # must not keep a closed connection's consumer alive.
            async with asyncio.timeout(self.disconnect_timeout):
                while joined:
                    try:
                        await layer.group_discard(joined[-1], self.channel_name)
                    except Exception as exc:
                        # The Redis layer does it again when Redis answers; any membership
                        # expires on its own (group_expiry) too. Say so, not fail.
                        logger.warning(
                            "%s: leaving group %r failed (%r); the layer leaves it when it "
                            "can, or it expires after group_expiry",
                            type(self).__name__,
                            joined[-1],
                            exc,
                        )
                    joined.pop()
        except TimeoutError:
            logger.error(
                "%s: leaving groups %r did not finish within %.1f s and was abandoned; "
                "the memberships expire after group_expiry",
                type(self).__name__,
                joined,
                self.disconnect_timeout,
            )
            joined.clear()

    async def _cleanup(self) -> None:
        """Release what the connection holds (groups, then its channel); runs however the
        consumer ends."""
        await self._leave_groups()
        layer = self.channel_layer
        discard = getattr(layer, "discard_channel", None)  # a Channels layer has none
        if discard is not None and self.__dict__.get("channel_name"):
            try:
                async with asyncio.timeout(self.disconnect_timeout):
                    await discard(self.channel_name)
            except Exception as exc:
                # Its messages expire on their own; say so, not fail the disconnect.
                logger.warning(
                    "%s: discarding channel %r failed (%r); its messages expire instead",
                    type(self).__name__,
                    self.channel_name,
                    exc,
                )

    async def run_with_deadline(self, what: str, function: Callable[..., Any], *args: Any) -> None:
        """Run a hook, cancelling it after ``disconnect_timeout`` seconds and logging its stack."""
        thread_frame: list[int] = []
        task = asyncio.ensure_future(self._call_recording_thread(function, thread_frame, *args))
        done, _ = await asyncio.wait({task}, timeout=self.disconnect_timeout)
        if task in done:
            exc = task.exception()
            if exc is not None:
                logger.error("%s.%s() raised: %s", type(self).__name__, what, exc, exc_info=exc)
            return
        stack = self._stuck_where(task, thread_frame)
        task.cancel()
        await asyncio.wait({task})
        logger.error(
            "%s.%s() did not finish within %.1f s and was cancelled; it was stuck at:\n%s",
            type(self).__name__,
            what,
            self.disconnect_timeout,
            stack,
        )

    async def _call_recording_thread(
        self, function: Callable[..., Any], record: list[int], *args: Any
    ) -> Any:
        return await self._call(function, *args)

    @staticmethod
    def _stuck_where(task: asyncio.Task[Any], thread_ident: list[int]) -> str:
        if thread_ident:
            frame = sys._current_frames().get(thread_ident[0])
            if frame is not None:
                return "".join(traceback.format_stack(frame)) + (
                    "  (in a worker thread, which keeps running: threads cannot be cancelled)"
                )
        # Task.get_stack() gives one frame for a suspended coroutine; follow the chain of
        # awaits instead, down to the innermost coroutine, which is where it waits.
        summaries: list[traceback.FrameSummary] = []
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:
                break
            summaries.append(
                traceback.FrameSummary(
                    frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name
                )
            )
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        if not summaries:
            return "(no stack available)"
        return "".join(traceback.format_list(summaries))

    def _track_send(self, send: Send) -> Send:
        return send


class AsyncConsumer(_ConsumerBase):
    """The base of async consumers: ``async def`` handlers run on the event loop.

    Each message from the client (``websocket.receive``) or from the channel layer
    (``{"type": "chat.message"}`` sent to ``self.channel_name`` or a group) goes to the
    method named after its type, with dots as underscores (``chat_message``).
    """

    async def send(self, message: Message) -> None:
        """Send an ASGI event to the client."""
        await self.base_send(message)


class SyncConsumer(_ConsumerBase):
    """The base of sync consumers: plain ``def`` handlers run in a thread pool.

    Unlike Django Channels, whose sync consumers share one thread, each handler runs in a
    thread of :func:`~kanal.consumers.sync_executor`, so a handler blocked on I/O holds up
    only its own connection. A connection's handlers still run one at a time, in order, each
    with the hooks of :func:`~kanal.consumers.add_sync_hooks` around it (``kanal.django``:
    Django's ``close_old_connections``, as Channels' sync consumers and Django's requests
    have).
    """

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        if inspect.iscoroutinefunction(function):
            return await function(*args)
        return await run_sync(function, *args)

    async def _call_recording_thread(
        self, function: Callable[..., Any], record: list[int], *args: Any
    ) -> Any:
        if inspect.iscoroutinefunction(function):
            return await function(*args)

        def run(*inner: Any) -> Any:
            record.append(threading.get_ident())
            return function(*inner)

        return await self._call(run, *args)

    def send(self, message: Message) -> None:
        """Send an ASGI event to the client (blocks until the server took it)."""
        async_to_sync(self.base_send)(message)
