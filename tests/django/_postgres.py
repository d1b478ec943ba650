"""A PostgreSQL server for tests: a cluster of its own on a free port, else the machine's."""

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

# Fewer than the 200 clients of the test, so that one connection per client would fail.
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
def postgres_server() -> Iterator[tuple[int, int | None]]:
    """Yield ``(port, max_connections)``: ``None`` when it is the machine's server."""
    bin_dir = _binaries()
    if bin_dir is None:
        if not _listening(*MACHINE):
            raise RuntimeError("no PostgreSQL: install postgresql, or run one on 5432")
        yield MACHINE[1], None
        return
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
        if not _listening(*MACHINE):
            raise RuntimeError(f"cannot start PostgreSQL ({exc}) and none runs on 5432") from exc
        yield MACHINE[1], None
        return
    try:
        yield port, MAX_CONNECTIONS
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
