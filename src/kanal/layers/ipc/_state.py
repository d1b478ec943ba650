"""What the processes of an ``ipc://`` layer share: one SQLite database in WAL mode.

Three tables: group memberships (``members``: group, channel, the process that owns the
channel if it is process-specific, deadline), the home of each named channel (``homes``:
the process whose memory holds its messages and hands them to receivers) and presence
entries (``presence``). Every change is one statement or one short transaction; SQLite's
locks are ``fcntl`` locks, which the kernel releases when a process dies, and WAL recovers
a transaction a killed process left half done, so no process can leave the others stuck.

Reads of a group's members are cached per connection and checked with
``PRAGMA data_version``, which changes when another connection commits: a ``group_send``
to an unchanged group costs one pragma, not a query.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from kanal.layers.ipc._paths import make_private

__all__ = ["SharedState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS members (
    grp TEXT NOT NULL, channel TEXT NOT NULL, owner TEXT, deadline REAL NOT NULL,
    PRIMARY KEY (grp, channel)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_owner ON members (owner);
CREATE TABLE IF NOT EXISTS homes (
    channel TEXT PRIMARY KEY, owner TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS homes_owner ON homes (owner);
CREATE TABLE IF NOT EXISTS presence (
    grp TEXT NOT NULL, ref TEXT NOT NULL, deadline REAL NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (grp, ref)
) WITHOUT ROWID;
"""
# Cached groups per process; past it the cache starts afresh (a server with many rooms).
_MAX_CACHED_GROUPS = 10_000


class SharedState:
    """One process's connection to the layer's database (used from one loop's thread)."""

    def __init__(self, directory: Path) -> None:
        path = directory / "state.db"
        # Autocommit (isolation_level=None): each statement is its own short transaction.
        # The busy timeout covers another process's write in progress (microseconds).
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives the process's crash (not a power cut, which
        # would also end every process using it), without an fsync per commit.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        for suffix in ("", "-wal", "-shm"):
            make_private(path.with_name(path.name + suffix))
        self._version = self._data_version()
        # group -> (members, the earliest deadline among them)
        self._groups: dict[str, tuple[list[str], float]] = {}

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def _data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _changed(self) -> None:
        """This connection wrote: what it cached may be stale."""
        self._groups.clear()

    # -- groups ----------------------------------------------------------------------------

    def add_member(self, group: str, channel: str, owner: str | None, deadline: float) -> None:
        """Add ``channel`` to ``group`` until ``deadline`` (renewing it if it is there)."""
        self._db.execute(
            "INSERT INTO members (grp, channel, owner, deadline) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (grp, channel) DO UPDATE SET deadline = excluded.deadline",
            (group, channel, owner, deadline),
        )
        self._changed()

    def discard_member(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group`` (silent if it was not there)."""
        self._db.execute("DELETE FROM members WHERE grp = ? AND channel = ?", (group, channel))
        self._changed()

    def member_counts(self, owner: str, now: float) -> dict[str, int]:
        """Groups with channels of process ``owner`` whose membership lasts beyond ``now``,
        and how many of them each."""
        rows = self._db.execute(
            "SELECT grp, COUNT(*) FROM members WHERE owner = ? AND deadline > ? GROUP BY grp",
            (owner, now),
        )
        return {group: count for group, count in rows}

    def members(self, group: str, now: float) -> list[str]:
        """The channels of ``group`` whose membership lasts beyond ``now``.

        The same list object is returned while nothing changed, so that callers can cache
        what they derive from it by identity.
        """
        version = self._data_version()
        if version != self._version:
            self._version = version
            self._groups.clear()
        cached = self._groups.get(group)
        if cached is not None and cached[1] > now:
            return cached[0]
        rows = self._db.execute(
            "SELECT channel, deadline FROM members WHERE grp = ? AND deadline > ?", (group, now)
        ).fetchall()
        members = [channel for channel, _ in rows]
        earliest = min((deadline for _, deadline in rows), default=float("inf"))
        if len(self._groups) >= _MAX_CACHED_GROUPS:
            self._groups.clear()
        self._groups[group] = (members, earliest)
        return members

    def expire_members(self, now: float) -> None:
        """Delete memberships that ended (their rows only; reads skip them already)."""
        self._db.execute("DELETE FROM members WHERE deadline <= ?", (now,))
        self._changed()

    # -- homes of named channels ---------------------------------------------------------------

    def home(self, channel: str, candidate: str) -> str:
        """The process that is the home of named ``channel``; ``candidate`` if it had none."""
        self._db.execute(
            "INSERT INTO homes (channel, owner) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (channel, candidate),
        )
        row = self._db.execute("SELECT owner FROM homes WHERE channel = ?", (channel,)).fetchone()
        return str(row[0]) if row is not None else candidate

    # -- processes ---------------------------------------------------------------------------

    def forget_process(self, token: str) -> None:
        """Remove what a process that ended owned: its channels' memberships, its homes."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM members WHERE owner = ?", (token,))
            self._db.execute("DELETE FROM homes WHERE owner = ?", (token,))
        self._changed()

    def wipe(self) -> None:
        """Empty every table (the first process of a directory where nobody lives)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for table in ("members", "homes", "presence"):
                self._db.execute(f"DELETE FROM {table}")
        self._changed()

    def clear(self) -> None:
        """Forget groups and presences (``flush``); homes stay, as their processes do."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM members")
            self._db.execute("DELETE FROM presence")
        self._changed()

    # -- presence (the store behind kanal.layers._presence) ------------------------------------

    def presence_write(
        self,
        group: str,
        add: Sequence[tuple[str, bytes]],
        renew: Sequence[str],
        remove: Sequence[str],
        deadline: float,
        now: float,
    ) -> tuple[list[str], list[tuple[str, bytes]]]:
        """One atomic change of ``group``'s presence (see ``BaseChannelLayer._presence_write``)."""
        db = self._db
        with db:
            db.execute("BEGIN IMMEDIATE")
            gone: list[tuple[str, bytes]] = [
                (str(ref), bytes(data))
                for ref, data in db.execute(
                    "DELETE FROM presence WHERE grp = ? AND deadline <= ? RETURNING ref, data",
                    (group, now),
                )
            ]
            absent: list[str] = []
            for ref, data in add:
                row = db.execute(
                    "SELECT 1 FROM presence WHERE grp = ? AND ref = ?", (group, ref)
                ).fetchone()
                if row is None:
                    absent.append(ref)
                db.execute(
                    "INSERT INTO presence (grp, ref, deadline, data) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (grp, ref) DO UPDATE SET deadline = excluded.deadline, "
                    "data = excluded.data",
                    (group, ref, deadline, data),
                )
            for ref in renew:
                changed = db.execute(
                    "UPDATE presence SET deadline = ? WHERE grp = ? AND ref = ?",
                    (deadline, group, ref),
                ).rowcount
                if not changed:
                    absent.append(ref)
            for ref in remove:
                row = db.execute(
                    "DELETE FROM presence WHERE grp = ? AND ref = ? RETURNING data", (group, ref)
                ).fetchone()
                if row is not None:
                    gone.append((ref, bytes(row[0])))
        return absent, gone

    def presence_read(self, group: str, now: float) -> list[tuple[str, bytes]]:
        """``group``'s unexpired presence entries."""
        return [
            (str(ref), bytes(data))
            for ref, data in self._db.execute(
                "SELECT ref, data FROM presence WHERE grp = ? AND deadline > ?", (group, now)
            )
        ]
