"""A synchronous facade of a channel layer, for scripts, task queues and sync views."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from kanal.exceptions import LayerClosed, ReceiveTimeout, SyncContextError
from kanal.layers._background import adopt, background_loop

if TYPE_CHECKING:
    from kanal.layers._base import BaseChannelLayer, Message
    from kanal.layers._presence import Presences

__all__ = ["SyncChannelLayer"]

T = TypeVar("T")

# How often a blocked call checks that the loop it waits on still runs.
_LIVENESS_CHECK = 1.0


class SyncChannelLayer:
    """Blocking versions of a layer's operations, safe to call from any thread.

    Each call runs on the loop the layer's state lives on (a server's loop, for a layer a
    server uses), or else on one background loop shared by the whole process. Calling it from
    a thread that runs an event loop raises :class:`~kanal.exceptions.SyncContextError`:
    blocking there would stall that loop; ``await`` the layer instead.
    """

    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer

    def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run the coroutine ``call()`` where the layer lives and return its result.

        For helpers built on the layer (``kanal.worker.call_sync`` uses it). Raises
        :class:`~kanal.exceptions.LayerClosed` if that event loop stops before the call ends.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise SyncContextError(
                "a synchronous channel-layer call was made from a thread running an event "
                "loop; use the async method (await layer.send(...)) there"
            )
        loop = self.layer.bound_loop()
        if loop is None:
            loop = background_loop()
            adopt(self.layer)

        async def run() -> T:
            return await call()

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            while True:
                try:
                    return future.result(timeout=_LIVENESS_CHECK)
                except concurrent.futures.TimeoutError:
                    if future.done():
                        raise  # the call itself raised a TimeoutError (ReceiveTimeout...)
                    # Still running, unless the loop it was queued on has stopped (a server
                    # shutting down): then it never will, and waiting would hang forever.
                    if not loop.is_running():
                        raise LayerClosed(
                            "the event loop the channel layer runs on stopped before this "
                            "call finished"
                        ) from None
        except BaseException:
            # Ctrl+C (KeyboardInterrupt) while waiting: stop the call too. A receive left
            # running would take the next message for a caller that is gone.
            future.cancel()
            raise

    def send(self, channel: str, message: Message) -> None:
        """Send ``message`` to ``channel``; raises ``ChannelFull`` at capacity."""
        self.run(lambda: self.layer.send(channel, message))

    def receive(self, channel: str, timeout: float | None = None) -> Message:
        """Wait up to ``timeout`` seconds (``None``: forever) for the next message.

        Raises :class:`~kanal.exceptions.ReceiveTimeout` when nothing arrives in time; no
        message is lost by timing out.
        """
        if timeout is None:
            return self.run(lambda: self.layer.receive(channel))

        async def receive_within() -> Message:
            try:
                async with asyncio.timeout(timeout):
                    return await self.layer.receive(channel)
            except TimeoutError:
                raise ReceiveTimeout(f"no message on {channel!r} within {timeout:g} s") from None

        return self.run(receive_within)

    def new_channel(self, prefix: str = "specific") -> str:
        """A new process-specific channel name."""
        return self.run(lambda: self.layer.new_channel(prefix))

    def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group``."""
        self.run(lambda: self.layer.group_add(group, channel))

    def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``."""
        self.run(lambda: self.layer.group_discard(group, channel))

    def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every member of ``group``."""
        self.run(lambda: self.layer.group_send(group, message))

    def presence(self, group: str) -> Presences:
        """Who is present in ``group`` (see :meth:`BaseChannelLayer.presence`): a sync view
        showing who is online, say."""
        return self.run(lambda: self.layer.presence(group))

    def flush(self) -> None:
        """Delete every message and group."""
        self.run(self.layer.flush)

    def close(self) -> None:
        """Close the layer."""
        self.run(self.layer.close)
