"""How kanal's commands log: the level names they accept, and one handler on stderr.

This module sits at the top of the package and imports nothing from kanal because the
server (which may import only ``kanal.protocols``) validates and applies ``log_level``, and
the ``kanal worker`` and ``kanal scheduler`` commands, which run no server, log the same way.
"""

from __future__ import annotations

import logging

__all__ = ["DEFAULT_LOG_LEVEL", "LOG_LEVELS", "TRACE", "configure_logging"]

#: The names ``--log-level`` and ``Config.log_level`` accept, most severe first.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
DEFAULT_LOG_LEVEL = "info"
#: "trace": below DEBUG, for what would flood a debug log.
TRACE = 5
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, *, logger: str = "kanal") -> None:
    """Set ``logger``'s level (``""``: the root logger, every library's records) to ``level``
    (one of :data:`LOG_LEVELS`), and send its records to stderr unless the host already
    configured logging."""
    logging.addLevelName(TRACE, "TRACE")
    numeric = TRACE if level.lower() == "trace" else getattr(logging, level.upper())
    target = logging.getLogger(logger)
    target.setLevel(numeric)
    if not target.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        target.addHandler(handler)
