"""Real Mosquitto brokers for tests: started on a free port, stopped and killed for real."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

from kanal.exceptions import KanalError
from kanal.testing._redis import RedisServer

__all__ = ["MosquittoServer"]

#: Where Debian's ``mosquitto`` package puts the broker (``/usr/sbin`` is often not on PATH).
_DEBIAN_BINARY = "/usr/sbin/mosquitto"


class MosquittoServer(RedisServer):
    """One ``mosquitto`` broker on loopback, for tests and benchmarks.

    It runs the way :class:`RedisServer` runs a Redis (the same process, log and
    start/kill/restart machinery), from a config file in its own temporary directory:
    one listener on ``host:port``, anonymous clients allowed (unless ``users`` is given),
    and ``persistence true`` with a save after every change, so that sessions, their
    subscriptions and their queued QoS 1/2 messages survive :meth:`restart`.

    ``config`` adds lines to the config file (a TLS listener, limits); ``users`` maps
    user names to passwords and turns anonymous access off.
    """

    ready_text = " running"

    def __init__(
        self,
        port: int | None = None,
        *,
        config: Sequence[str] = (),
        users: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        binary: str = "mosquitto",
    ) -> None:
        path = shutil.which(binary) or (
            _DEBIAN_BINARY if binary == "mosquitto" and os.path.exists(_DEBIAN_BINARY) else None
        )
        if path is None:
            raise KanalError(f"{binary!r} is not installed; install it (apt-get install mosquitto)")
        super().__init__(port, binary=path, host=host)
        self.config_lines = list(config)
        self.users = dict(users or {})
        self.config_file = os.path.join(self._dir, "mosquitto.conf")

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of this broker."""
        return f"mqtt://{self.host}:{self.port}"

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.users else 'true'}",
            "persistence true",
            f"persistence_location {self._dir}/",
            # Save after every change, not every 30 minutes: a killed broker then keeps
            # what a clean shutdown would have saved.
            "autosave_on_changes true",
            "autosave_interval 1",
            # Mosquitto's default of 1000 queued messages per offline client is below
            # what a load test queues; the tests want loss to come only from kanal.
            "max_queued_messages 100000",
            # stderr, not stdout: mosquitto buffers stdout on a pipe, and start() waits for a line.
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto switches to the "mosquitto" user, which may not
            # read or write this private temporary directory.
            lines.append("user root")
        if self.users:
            passwords = os.path.join(self._dir, "passwords")
            with open(passwords, "w") as file:
                for name, password in self.users.items():
                    file.write(f"{name}:{password}\n")
            os.chmod(passwords, 0o600)
            passwd = shutil.which("mosquitto_passwd")
            if passwd is None:
                raise KanalError("mosquitto_passwd is missing (it comes with mosquitto)")
            # Hashes the plain-text file in place.
            subprocess.run([passwd, "-U", passwords], check=True, capture_output=True)
            lines.append(f"password_file {passwords}")
        lines.extend(self.config_lines)
        with open(self.config_file, "w") as file:
            file.write("\n".join(lines) + "\n")

    def command_line(self) -> list[str]:
        """The ``mosquitto -c FILE`` command :meth:`start` runs."""
        return [self.binary, "-c", self.config_file]

    def start(self, timeout: float = 10.0) -> None:
        """Write the config file, start the broker and wait until it logs that it runs."""
        if self.process is None or self.process.poll() is not None:
            self._write_config()
        super().start(timeout)

    def save(self, timeout: float = 10.0) -> None:
        """Make the broker write its sessions and queued messages to disk now (SIGUSR1).

        Mosquitto saves after changes, but not before acknowledging them: a message
        acknowledged just before a :meth:`kill` can be lost with the broker. Call this
        first to test what a crash does to the rest.
        """
        assert self.process is not None
        database = os.path.join(self._dir, "mosquitto.db")
        before = _identity(database)
        with self._log_changed:
            self._consumed = len(self._log)  # a save logged before now does not count
        self.process.send_signal(signal.SIGUSR1)
        self.wait_for_log("Saving in-memory database", timeout)
        # Mosquitto logs that line before it writes: the save is done once the new file
        # (written as mosquitto.db.new) has been renamed over the old one. A kill before
        # then would leave the previous save in place.
        deadline = time.monotonic() + timeout
        while os.path.exists(database + ".new") or _identity(database) == before:
            if time.monotonic() > deadline:
                raise KanalError(f"mosquitto did not finish saving {database} in {timeout} s")
            time.sleep(0.005)

    def restart(self, timeout: float = 10.0, *, graceful: bool = True) -> None:
        """Stop the broker (SIGTERM, or SIGKILL if not ``graceful``), then start it again.

        Either way the persisted sessions are loaded again: a graceful stop saves them, and
        every change was saved as it happened.
        """
        if graceful:
            self.stop()
        else:
            self.kill()
            self._close_log()
        self.process = None
        self.start(timeout)


def _identity(path: str) -> tuple[int, int] | None:
    """What changes when ``path`` is replaced (inode, modification time), or None if absent."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns
