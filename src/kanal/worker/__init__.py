"""Workers and services: consumers for named channels, and request/reply over the layer.

::

    # myapp.py
    from kanal.routing import ChannelNameRouter
    from kanal.worker import service

    async def thumbnails(message):
        return {"url": make_thumbnail(message["image"])}

    application = ChannelNameRouter({"thumbnails": service(thumbnails)})

    # kanal worker myapp:application thumbnails

    # anywhere else
    result = await call("thumbnails", {"type": "thumbnail.make", "image": "a.png"}, timeout=5)
"""

from kanal.exceptions import ServiceError, ServiceTimeout, WorkerError
from kanal.worker._scheduler import SCHEDULER_CHANNEL, Cron, Every, Job, Scheduler, send_later
from kanal.worker._services import (
    DEFAULT_CALL_TIMEOUT,
    CallStats,
    call,
    call_stats,
    call_sync,
    reply,
    service,
)
from kanal.worker._worker import DEFAULT_SHUTDOWN_TIMEOUT, Worker

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "SCHEDULER_CHANNEL",
    "CallStats",
    "Cron",
    "Every",
    "Job",
    "Scheduler",
    "ServiceError",
    "ServiceTimeout",
    "Worker",
    "WorkerError",
    "call",
    "call_stats",
    "call_sync",
    "reply",
    "send_later",
    "service",
]
