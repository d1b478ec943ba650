"""``kanal inspect``: what the processes attached to a channel layer are doing.

Every ``kanal`` process on a shared layer answers through it (:class:`Responder`, started
by the commands); ``kanal inspect LAYER_URL`` asks them all (:class:`Inspector`) and draws a
live table with ``rich`` (the ``inspect`` extra), or prints JSON (``--once --json``) for
scripts. A server on ``memory://`` answers on its metrics listener (``/inspect``) instead.
See docs/operations.md.

The snapshot a process takes of its counters (:func:`take_snapshot`) is also what the
metrics listener serves.
"""

from kanal.inspect._attach import attach, attach_server
from kanal.inspect._gather import DEFAULT_WAIT, Inspector
from kanal.inspect._report import process_summary
from kanal.inspect._responder import INSPECT_GROUP, Responder
from kanal.inspect._snapshot import ProcessSnapshot, take_snapshot

__all__ = [
    "DEFAULT_WAIT",
    "INSPECT_GROUP",
    "Inspector",
    "ProcessSnapshot",
    "Responder",
    "attach",
    "attach_server",
    "process_summary",
    "take_snapshot",
]
