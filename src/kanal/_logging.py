"""How kanal's commands log: the level names they accept, one handler on stderr, and the
two line formats (text for people, JSON lines for log collectors).

This module sits at the top of the package and imports nothing from kanal because the
server (which may import only ``kanal.protocols``) validates and applies ``log_level``, and
the ``kanal worker`` and ``kanal scheduler`` commands, which run no server, log the same way.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from contextvars import ContextVar

__all__ = [
    "CONNECTION",
    "DEFAULT_LOG_LEVEL",
    "LOG_FORMATS",
    "LOG_FORMAT_ENV",
    "LOG_LEVELS",
    "TRACE",
    "JsonFormatter",
    "configure_logging",
    "logs_connections",
]

#: The names ``--log-level`` and ``Config.log_level`` accept, most severe first.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
DEFAULT_LOG_LEVEL = "info"
#: "trace": below DEBUG, for what would flood a debug log.
TRACE = 5
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The names ``--log-format`` accepts.
LOG_FORMATS = ("text", "json")
#: Where the format is kept, so that a server's worker processes log as their supervisor.
LOG_FORMAT_ENV = "KANAL_LOG_FORMAT"
#: Fields a record may carry (``logger.info(..., extra={"path": ...})``), written when set:
#: the same names in the server's, the workers' and the scheduler's lines.
CONTEXT_FIELDS = ("connection", "client", "path", "status", "channel", "group", "topic")
#: The connection a line is about, for the lines that do not say: the server sets it in
#: the task that runs a connection's application (and a bridge worker in the one that runs
#: it for a bridged connection), so that whatever that code logs, through any logger,
#: carries the connection's id. A context variable, so nothing is passed around for it.
CONNECTION: ContextVar[str | None] = ContextVar("kanal_connection", default=None)
#: Whether :func:`configure_logging` chose JSON lines, the only format that writes the
#: connection id: in text, the server does not set :data:`CONNECTION` at all (a value set in
#: a connection's task is a context of its own, about 180 bytes per WebSocket).
_json_lines = False


def logs_connections() -> bool:
    """Whether the lines this process writes carry connection ids (``--log-format json``)."""
    return _json_lines


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, ``pid``, the :data:`CONTEXT_FIELDS` the record carries, and ``exc`` (the
    formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if "connection" not in entry:
            # Formatted where it was logged (a stream handler), so still in its context.
            connection = CONNECTION.get()
            if connection is not None:
                entry["connection"] = connection
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, *, logger: str = "kanal", log_format: str | None = None) -> None:
    """Set ``logger``'s level (``""``: the root logger, every library's records) to ``level``
    (one of :data:`LOG_LEVELS`), and send its records to stderr unless the host already
    configured logging, as ``log_format`` says (one of :data:`LOG_FORMATS`; by default
    ``$KANAL_LOG_FORMAT``, else text).

    ``kanal serve`` configures ``"kanal"`` only, as uvicorn does its own loggers: an
    application that configures logging (Django's ``LOGGING``) keeps its handlers, and its
    lines are not written twice.
    """
    global _json_lines
    log_format = log_format or os.environ.get(LOG_FORMAT_ENV) or "text"
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    _json_lines = log_format == "json"
    logging.addLevelName(TRACE, "TRACE")
    numeric = TRACE if level.lower() == "trace" else getattr(logging, level.upper())
    target = logging.getLogger(logger)
    target.setLevel(numeric)
    if not target.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            JsonFormatter() if log_format == "json" else logging.Formatter(_FORMAT)
        )
        target.addHandler(handler)
