"""The chat example: rooms by URL, a name per user, join/leave notices, a vanilla-JS page.

Run it with ``make demo`` (or ``python -m examples.chat``) and open http://127.0.0.1:8000/.
``KANAL_LAYER`` picks the channel layer: the default ``memory://`` serves one process;
``redis://localhost:6379/0`` lets several ``kanal serve`` processes share the rooms.
"""
