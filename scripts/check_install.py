"""Check that a plain ``pip install kanal`` (no extras) works.

``make check-install`` runs this with the Python of a fresh virtual environment into which
kanal was installed without extras. It checks, with the standard library only:

1. the dependencies declared in the installed metadata are the third-party packages that
   kanal's code imports: none missing, none unused;
2. every public module imports, and a module that needs an extra fails with an error that
   names it;
3. ``kanal serve`` runs an application written with kanal's routing and consumers: one
   HTTP request and one WebSocket handshake and message, then a clean stop on SIGTERM;
   with ``--metrics``, which needs an extra, it stops at once and names the extra; so does
   ``kanal inspect``'s live view (the ``inspect`` extra).

Exits non-zero with the reason on the first failure.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import http.client
import importlib
import importlib.metadata
import os
import pkgutil
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# How long the server may take to start, answer, and stop; generous for a loaded machine.
DEADLINE = 30.0

# Public modules that a plain install cannot import: what the error must say.
NEEDS_MORE = {
    # An extra of kanal's: the error names the pip command.
    "kanal.layers.redis": "pip install 'kanal[redis]'",
    "kanal.mqtt": "pip install 'kanal[mqtt]'",
    "kanal.metrics": "pip install 'kanal[metrics]'",
    # (its submodules are not even found without it: listing them imports the package)
    "kanal.django": "pip install 'kanal[django]'",
    # Loaded by pytest itself (the pytest11 entry point), so only ever imported with it.
    "kanal.testing.pytest_plugin": "pytest",
}

# Imported by kanal but brought by the program that loads the module, never by kanal:
# pytest loads kanal's plugin, and the plugin uses pytest-asyncio only if it is there.
PROVIDED_BY_THE_CALLER = {"pytest", "pytest_asyncio"}

# Imported only where installed, to work with it, and never required: the conformance suite's
# Django Channels check skips without Channels.
USED_IF_INSTALLED = {"channels"}

APP = '''
from kanal.consumers import AsyncWebsocketConsumer
from kanal.routing import ProtocolTypeRouter, URLRouter, path


async def hello(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello from kanal"})


class Echo(AsyncWebsocketConsumer):
    """Echoes through a group, so the message goes through the channel layer too."""

    async def connect(self):
        await self.join_group("echo")
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send("echo", {"type": "echo.text", "text": text_data})

    async def echo_text(self, event):
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter(
    {"http": hello, "websocket": URLRouter([path("ws/", Echo.as_asgi())])}
)
'''


class CheckFailed(Exception):
    """One of the checks did not hold."""


def _installed_kanal() -> Path:
    import kanal

    location = Path(kanal.__file__).resolve().parent
    if not location.is_relative_to(Path(sys.prefix).resolve()):
        raise CheckFailed(f"kanal was imported from {location}, not from the environment")
    return location


# -- 1. declared dependencies against imports -----------------------------------------


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """The runtime requirements and each extra's, as normalised names."""
    runtime: set[str] = set()
    extras: dict[str, set[str]] = {}
    for requirement in importlib.metadata.requires("kanal") or []:
        name = _normalise(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        if extra:
            extras.setdefault(extra.group(1), set()).add(name)
        else:
            runtime.add(name)
    return runtime, extras


# Packages imported under another name than their distribution's.
IMPORT_NAMES = {"paho": "paho-mqtt"}


def _imported(package: Path) -> set[str]:
    """Top-level names of the non-standard modules imported anywhere in ``package``."""
    names: set[str] = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return {
        _normalise(IMPORT_NAMES.get(name, name))
        for name in names
        if name not in sys.stdlib_module_names and name not in ("kanal", "__future__")
    }


# Extras with the repository's own tools (the test suite, the benchmarks), not kanal's.
TOOL_EXTRAS = {"test", "bench"}


def check_dependencies(package: Path) -> None:
    # Every package kanal uses is imported under its distribution's name (normalised); a
    # package whose names differ would need a mapping here.
    runtime, extras = _declared()
    optional = set().union(*(names for extra, names in extras.items() if extra not in TOOL_EXTRAS))
    imported = _imported(package) - PROVIDED_BY_THE_CALLER - USED_IF_INSTALLED
    undeclared = imported - runtime - optional
    if undeclared:
        raise CheckFailed(f"kanal imports {sorted(undeclared)}, which no requirement brings")
    unused = (runtime | optional) - imported
    if unused:
        raise CheckFailed(f"kanal requires {sorted(unused)}, which nothing in it imports")
    print(f"ok: requirements match the imports ({', '.join(sorted(runtime))})")


# -- 2. public modules ----------------------------------------------------------------


def public_modules(package: Path) -> list[str]:
    names = ["kanal"]
    for module in pkgutil.walk_packages([str(package)], prefix="kanal."):
        if not any(part.startswith("_") for part in module.name.split(".")):
            names.append(module.name)
    return sorted(names)


def check_imports(package: Path) -> None:
    modules = public_modules(package)
    missing = set(NEEDS_MORE) - set(modules)
    if missing:
        raise CheckFailed(f"modules listed in NEEDS_MORE no longer exist: {sorted(missing)}")
    for name in modules:
        hint = NEEDS_MORE.get(name)
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if hint is None:
                raise CheckFailed(f"import {name} failed in a plain install: {exc!r}") from exc
            if hint not in str(exc):
                raise CheckFailed(f"import {name} failed without saying {hint!r}: {exc}") from exc
            print(f"ok: {name} needs more, and says so: {exc}")
        else:
            if hint is not None:
                raise CheckFailed(f"{name} imported although {hint!r} is not installed")
    print(f"ok: {len(modules) - len(NEEDS_MORE)} public modules import")
    from kanal.exceptions import ConfigError
    from kanal.layers import layer_from_url

    try:
        layer_from_url("redis://127.0.0.1:6379/0")
    except ConfigError as exc:
        if NEEDS_MORE["kanal.layers.redis"] not in str(exc):
            raise CheckFailed(f"a redis:// layer failed without naming the extra: {exc}") from exc
        print(f"ok: a redis:// layer says what to install: {exc}")
    else:
        raise CheckFailed("a redis:// layer was made without the redis extra")


# -- 3. kanal serve ---------------------------------------------------------------------


class Server:
    """``kanal serve`` in a subprocess on a free port, its log collected."""

    def __init__(self, app_dir: Path) -> None:
        self.ready_file = app_dir / "ready"
        kanal = Path(sys.executable).with_name("kanal")
        self.process = subprocess.Popen(
            [
                str(kanal),
                "serve",
                "checkapp:application",
                "--port",
                "0",
                "--ready-file",
                str(self.ready_file),
            ],
            cwd=app_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Unbuffered, so that no line waits in a buffer where select() cannot see it.
            bufsize=0,
        )
        self.log: list[str] = []

    def wait_ready(self) -> tuple[str, int]:
        """Read the log until the server says it is ready; its address from the ready file."""
        assert self.process.stderr is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stderr, selectors.EVENT_READ)
            while True:
                if not selector.select(timeout=DEADLINE):
                    raise CheckFailed("kanal serve did not get ready in time")
                line = self.process.stderr.readline().decode(errors="replace")
                if not line:
                    raise CheckFailed(f"kanal serve exited with {self.process.wait()}")
                self.log.append(line)
                if "ready on" in line:
                    break
        # Keep reading the log, so that the server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        # The ready file is written before the log line: "<pid> http://host:port".
        url = self.ready_file.read_text(encoding="utf-8").split()[1]
        host, _, port = url.removeprefix("http://").rpartition(":")
        return host, int(port)

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line.decode(errors="replace"))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise CheckFailed("kanal serve did not stop on SIGTERM") from None


def check_http(host: str, port: int) -> None:
    connection = http.client.HTTPConnection(host, port, timeout=DEADLINE)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200 or body != b"hello from kanal":
        raise CheckFailed(f"HTTP GET / answered {response.status} {body!r}")
    print("ok: HTTP request answered")


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise CheckFailed(f"connection closed after {data!r}")
        data += chunk
    return data


def _masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked  # FIN + text, masked


def check_websocket(host: str, port: int) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    # RFC 6455 §4.2.2: the accept value is the key with this GUID, SHA-1, base64.
    guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    expected = base64.b64encode(hashlib.sha1((key + guid).encode()).digest()).decode()
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(
            (
                f"GET /ws/ HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head, _, rest = _read_until(sock, b"\r\n\r\n").partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        if not lines[0].startswith("HTTP/1.1 101") or headers.get("sec-websocket-accept") != (
            expected
        ):
            raise CheckFailed(f"WebSocket handshake answered {head!r}")
        sock.sendall(_masked_text_frame("ping through the layer"))
        while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
            chunk = sock.recv(65536)
            if not chunk:
                raise CheckFailed(f"connection closed after {rest!r}")
            rest += chunk
        if rest[0] != 0x81 or rest[2 : 2 + (rest[1] & 0x7F)] != b"ping through the layer":
            raise CheckFailed(f"WebSocket echo was {rest!r}")
        sock.sendall(bytes([0x88, 0x82]) + b"\0\0\0\0" + (1000).to_bytes(2, "big"))  # close
    print("ok: WebSocket handshake and message")


def check_serve() -> None:
    with tempfile.TemporaryDirectory() as directory:
        app_dir = Path(directory)
        (app_dir / "checkapp.py").write_text(APP, encoding="utf-8")
        server = Server(app_dir)
        try:
            host, port = server.wait_ready()
            check_http(host, port)
            check_websocket(host, port)
        except BaseException:
            server.stop()
            sys.stderr.write("".join(server.log))
            raise
        code = server.stop()
        if code != 0:
            sys.stderr.write("".join(server.log))
            raise CheckFailed(f"kanal serve exited with {code} after SIGTERM")
    print("ok: kanal serve started, answered and stopped")


def _says_what_to_install(command: list[str], hint: str) -> None:
    """``kanal COMMAND...`` without the extra it needs stops at once (exit 2), saying ``hint``."""
    kanal = Path(sys.executable).with_name("kanal")
    shown = "kanal " + " ".join(command)
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "checkapp.py").write_text(APP, encoding="utf-8")
        try:
            done = subprocess.run(
                [str(kanal), *command],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=DEADLINE,
            )
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"{shown} ran without its extra") from None
    error = done.stderr.decode(errors="replace")
    if done.returncode != 2 or hint not in error:
        raise CheckFailed(f"{shown} exited {done.returncode} without saying {hint!r}: {error}")
    print(f"ok: {shown} says what to install: {error.strip()}")


def check_extras_are_named() -> None:
    """``kanal serve --metrics`` and ``kanal inspect``'s live view name their extras."""
    metrics = ["serve", "checkapp:application", "--port", "0", "--metrics", "0"]
    _says_what_to_install(metrics, NEEDS_MORE["kanal.metrics"])
    _says_what_to_install(
        ["inspect", "ipc://check-install", "--once"], "pip install 'kanal[inspect]'"
    )


def main() -> int:
    try:
        package = _installed_kanal()
        check_dependencies(package)
        check_imports(package)
        check_serve()
        check_extras_are_named()
    except CheckFailed as exc:
        print(f"check-install FAILED: {exc}", file=sys.stderr)
        return 1
    print("check-install: a plain install of kanal works")
    return 0


if __name__ == "__main__":
    sys.exit(main())
