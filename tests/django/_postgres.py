"""A PostgreSQL server for tests: the machine's on 127.0.0.1:5432, else one of its own."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from kanal.testing import free_port

# A cluster of our own allows fewer connections than the 200 clients of the test, so that one
# connection per client would fail (the machine's allows its own number, 100 by default).
MAX_CONNECTIONS = 40
MACHINE = ("127.0.0.1", 5432)


def _binaries() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _as_postgres(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; Debian has the postgres user for it.
    if os.geteuid() == 0 and shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


@contextmanager
def postgres_server() -> Iterator[int]:
    """Yield the port of a PostgreSQL server that trusts ``postgres`` on 127.0.0.1.

    The machine's server (trust authentication for ``postgres`` on loopback) when one
    listens on 5432; else a cluster started here on a free port and removed at exit.
    """
    if _listening(*MACHINE):
        yield MACHINE[1]
        return
    bin_dir = _binaries()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL: install postgresql, or run one on 5432")
    data = tempfile.mkdtemp(prefix="kanal-pg-")
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    try:
        subprocess.run(
            _as_postgres([f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres"]),
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = (
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1 "
            f"-c max_connections={MAX_CONNECTIONS} -c fsync=off"
        )
        # The server's output goes to a file: it would hold a pipe open for as long as it runs.
        log = os.path.join(data, "server.log")
        subprocess.run(
            _as_postgres(
                [f"{bin_dir}/pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "start"]
            ),
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(data, ignore_errors=True)
        raise RuntimeError(f"cannot start PostgreSQL ({exc}) and none runs on 5432") from exc
    try:
        yield port
    finally:
        with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            subprocess.run(
                _as_postgres([f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop"]),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )
        shutil.rmtree(data, ignore_errors=True)
