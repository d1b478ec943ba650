"""Real ``redis-server`` processes for tests: started on a free port, killed for real."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from kanal.exceptions import KanalError

__all__ = ["RedisServer", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class _Started:
    """Processes for a test, as a context manager: ``with`` starts them and closes them."""

    def start(self) -> None:
        """Start, returning once ready."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop, leaving nothing behind."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisServer(_Started):
    """One ``redis-server`` process on loopback, for tests and benchmarks.

    ``start()`` returns once the server logged that it accepts connections; ``kill()`` sends
    SIGKILL (a crash, not a shutdown); ``restart()`` starts it again on the same port.
    Nothing is persisted to disk.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str = "redis-server",
        args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        path = shutil.which(binary)
        if path is None:
            raise KanalError(
                f"{binary!r} is not installed; install it (apt-get install redis-server)"
            )
        self.binary = path
        self.host = host
        self.port = port or free_port(host)
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None
        # The server's log lines since the last start, read by a thread that never stops
        # reading: a server whose log pipe filled up would block on its next log line.
        self._log: list[str] = []
        self._log_changed = threading.Condition()
        self._log_ended = False
        self._consumed = 0  # lines wait_for_log() has looked at
        self._reader: threading.Thread | None = None
        self._dir = tempfile.mkdtemp(prefix="kanal-redis-")

    @property
    def url(self) -> str:
        """``redis://host:port/0`` of this server."""
        return f"redis://{self.host}:{self.port}/0"

    def command_line(self) -> list[str]:
        """The ``redis-server`` command :meth:`start` runs (no persistence, log to stdout)."""
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--logfile", "",
            "--loglevel", "notice",
            *self.args,
        ]  # fmt: skip

    #: The log text that means the server is ready (subclasses such as Sentinel change it).
    ready_text = "eady to accept connections"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it logs :attr:`ready_text`."""
        if self.process is not None and self.process.poll() is None:
            return
        with self._log_changed:
            self._log = []
            self._log_ended = False
            self._consumed = 0
        self.process = subprocess.Popen(
            self.command_line(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._reader = threading.Thread(
            target=self._read_log, args=(self.process,), name=f"redis-log-{self.port}", daemon=True
        )
        self._reader.start()
        self.wait_for_log(self.ready_text, timeout)

    def _read_log(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            with self._log_changed:
                if process is self.process:
                    self._log.append(line)
                    self._log_changed.notify_all()
        with self._log_changed:
            if process is self.process:
                self._log_ended = True
                self._log_changed.notify_all()

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """Wait until a log line since the last start contains ``text``; return that line.

        Each call looks at the lines that came after the ones earlier calls consumed, so
        waiting twice for the same text waits for it to be logged twice.
        """
        deadline = time.monotonic() + timeout
        with self._log_changed:
            while True:
                for index in range(self._consumed, len(self._log)):
                    if text in self._log[index]:
                        self._consumed = index + 1
                        return self._log[index]
                self._consumed = len(self._log)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._log_ended:
                    break
                self._log_changed.wait(remaining)
            tail = "\n".join(self._log[-10:])
        raise KanalError(
            f"redis-server on port {self.port} did not log {text!r} within {timeout} s:\n{tail}"
        )

    def kill(self) -> None:
        """SIGKILL the server and reap it (a crash: no shutdown, no save)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Terminate the server and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        """After the process ended: let the reader see the end of the log, then close it."""
        if self._reader is not None:
            self._reader.join(timeout=5)  # the pipe is at its end once the process is gone
            self._reader = None
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def restart(self, timeout: float = 10.0) -> None:
        """Kill the server if it runs, then start it again on the same port."""
        self.kill()
        self._close_log()
        self.process = None
        self.start(timeout)

    def close(self) -> None:
        """Stop the server and remove its working directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self) -> None:
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGKILL)
