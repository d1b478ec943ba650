"""``kanal`` command line: argument handling in-process, ``kanal serve`` as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.child_process import ChildProcess, child_process

from kanal.cli import build_parser, main
from kanal.server import Config
from kanal.testing import free_port


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().err


def test_bad_app_is_an_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "no_such_module_here:app", "--port", "0"]) == 2
    assert "no_such_module_here" in capsys.readouterr().err


def test_bad_option_value_is_an_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "tests.server.apps:hello", "--port", "70000"]) == 2
    assert "70000" in capsys.readouterr().err


def test_serve_arguments_build_the_config() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "pkg.mod:app",
            "--port",
            "9000",
            "--max-body-size",
            "1000",
            "--access-log",
            "--ws-ping-interval",
            "5",
            "--root-path",
            "/x/",
            "--reload-dir",
            "src",
        ]
    )
    config = Config.from_args(args)
    assert (config.app, config.port, config.access_log) == ("pkg.mod:app", 9000, True)
    assert config.limits.max_body_size == 1000
    assert config.ws_ping_interval == 5.0
    assert config.root_path == "/x"
    assert config.reload_dirs == ["src"]
    assert config.host == "127.0.0.1"  # untouched defaults stay
    for off in ("0", "-1"):
        args = build_parser().parse_args(["serve", "pkg.mod:app", "--ws-ping-interval", off])
        assert Config.from_args(args).ws_ping_interval is None


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--lifespan", "sometimes", "lifespan must be auto, on or off, not 'sometimes'"),
        ("--loop", "trio", "loop must be auto, asyncio or uvloop, not 'trio'"),
        ("--timeout-keep-alive", "-1", "timeout_keep_alive must be positive"),
        ("--ws-ping-timeout", "0", "ws_ping_timeout must be positive"),
    ],
)
def test_serve_option_values_are_checked_by_the_config(
    option: str, value: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "tests.server.apps:hello", option, value]) == 2
    assert named in capsys.readouterr().err


Spawn = Callable[..., Awaitable[ChildProcess]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Start ``kanal serve ARGS...`` processes, killed at the end of the test if still running."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(*args: str, **options: Any) -> ChildProcess:
            command = child_process("-m", "kanal.cli", "serve", *args, **options)
            return await stack.enter_async_context(command)

        yield start


READY = r"ready on http://127\.0\.0\.1:(\d+)"


async def test_serve_runs_until_sigterm(spawn: Spawn, tmp_path: Path) -> None:
    ready_file = tmp_path / "ready"
    server = await spawn(
        "tests.server.apps:make_app()",
        "--port",
        "0",
        "--ready-file",
        str(ready_file),
        "--access-log",
    )
    port = int((await server.wait_for(READY)).group(1))
    assert ready_file.exists()
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/hi?x=1")
    assert response.text == "Hello, world!"
    await server.wait_for(r'"GET /hi\?x=1 HTTP/1.1" 200')
    assert await server.stop() == 0
    await server.wait_for("kanal server stopped")
    assert not ready_file.exists()


async def test_serve_on_an_inherited_fd(spawn: Spawn) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    server = await spawn(
        "tests.server.apps:hello", "--fd", str(sock.fileno()), pass_fds=[sock.fileno()]
    )
    await server.wait_for("ready on")
    sock.close()
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{port}/")).text == "Hello, world!"
    assert await server.stop() == 0


@pytest.mark.slow
async def test_workers_share_the_port_and_a_crashed_one_is_restarted(
    spawn: Spawn, tmp_path: Path
) -> None:
    ready_file = tmp_path / "ready"
    port = free_port()
    server = await spawn(
        "tests.server.apps:pid_app",
        "--port",
        str(port),
        "--workers",
        "2",
        "--ready-file",
        str(ready_file),
    )
    await server.wait_for(rf"all 2 workers ready on 127\.0\.0\.1:{port}")
    assert ready_file.read_text().split()[0] == str(server.pid)
    async with httpx.AsyncClient() as client:
        pid = int((await client.get(f"http://127.0.0.1:{port}/")).text)
    assert pid != server.pid
    os.kill(pid, signal.SIGKILL)
    await server.wait_for(rf"worker {pid} exited with code -9")
    await server.wait_for("starting a new worker")
    await server.wait_for("ready on")
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200
    assert await server.stop() == 0
    assert not ready_file.exists()


@pytest.mark.slow
async def test_workers_finish_requests_when_the_whole_process_group_gets_sigterm(
    spawn: Spawn,
) -> None:
    # systemd's default KillMode signals every process of the group: each worker gets
    # SIGTERM from it and then again from its supervisor; the second must not cut the drain.
    port = free_port()
    server = await spawn(
        "tests.server.apps:answer_after_body",
        "--port",
        str(port),
        "--workers",
        "2",
        new_session=True,
    )
    await server.wait_for(rf"all 2 workers ready on 127\.0\.0\.1:{port}")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    await reader.readline()  # the chunk's size
    pid = int((await reader.readuntil(b",")).rstrip(b","))
    os.killpg(server.pid, signal.SIGTERM)
    # The worker serving the request hears it from the group and from its supervisor; the
    # kernel merges the two if both arrive before the worker runs (a loaded machine), so a
    # second one is sent once the first was heard: it must not cut the drain either.
    await server.wait_for(rf"received SIGTERM, shutting down \(pid {pid}\)")
    os.kill(pid, signal.SIGTERM)
    await server.wait_for(rf"received SIGTERM, shutting down \(pid {pid}\)")
    writer.write(b"0\r\n\r\n")
    rest = await reader.read()
    writer.close()
    assert rest.endswith(b"\r\n4\r\ndone\r\n0\r\n\r\n"), rest
    assert await server.stop() == 0


@pytest.mark.slow
async def test_reload_restarts_on_code_change(spawn: Spawn, tmp_path: Path) -> None:
    module = tmp_path / "reloadme.py"
    app_source = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": b"{}"}})
"""
    module.write_text(app_source.format("version one"))
    port = free_port()
    server = await spawn(
        "reloadme:app",
        "--port",
        str(port),
        "--reload",
        "--reload-dir",
        str(tmp_path),
        cwd=tmp_path,
    )
    await server.wait_for("ready on")
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{port}/")).text == "version one"
    module.write_text(app_source.format("version two"))
    await server.wait_for("restarting the workers")
    await server.wait_for("ready on")
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{port}/")).text == "version two"
    assert await server.stop() == 0


def test_port_in_use_is_an_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "tests.server.apps:hello", "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


async def test_kanal_serve_runs_django_and_starlette(
    spawn: Spawn,
) -> None:
    django = await spawn("tests.server.django_asgi:application", "--port", "0")
    starlette = await spawn("tests.server.test_frameworks:starlette_app()", "--port", "0")
    django_port = int((await django.wait_for(READY)).group(1))
    starlette_port = int((await starlette.wait_for(READY)).group(1))
    async with httpx.AsyncClient() as client:
        hello = await client.get(f"http://127.0.0.1:{django_port}/hello/")
        echo = await client.post(f"http://127.0.0.1:{django_port}/echo/", content=b"x=1")
        home = await client.get(f"http://127.0.0.1:{starlette_port}/")
    assert hello.text == "Hello from Django"
    assert echo.json()["body"] == "x=1"
    assert home.text == "hello from lifespan"
    assert await django.stop() == 0
    assert await starlette.stop() == 0


@pytest.mark.slow
async def test_workers_that_cannot_start_make_the_supervisor_give_up(
    spawn: Spawn,
) -> None:
    server = await spawn("tests.server.apps:does_not_exist", "--port", "0", "--workers", "2")
    await server.wait_for("workers keep failing at startup; stopping")
    assert await asyncio.wait_for(server.process.wait(), 30) == 1
