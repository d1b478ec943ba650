"""The ``ipc://`` channel layer: the processes of one host share channels and groups.

No server to run: each process listens on a Unix socket in the layer's directory and keeps
its own channels' messages; memberships and named channels' homes are in a small SQLite
database there. See ``docs/ipc.md``.
"""

from kanal.layers.ipc._layer import IpcChannelLayer

__all__ = ["IpcChannelLayer"]
