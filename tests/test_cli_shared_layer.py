"""Commands that run several processes never give each a layer of its own, silently.

``kanal serve --workers N`` with no layer configured uses ``ipc://`` (named after the
project directory); ``memory://`` asked for where several processes would each get one
is refused, with a message that names the layer and the fix.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import websockets
from tests.child_process import child_process

from kanal import cli
from kanal.cli import main
from kanal.layers import InMemoryChannelLayer, reset_channel_layers, set_default_layer_provider
from kanal.testing import free_port


@pytest.fixture(autouse=True)
def _no_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KANAL_LAYER", raising=False)


def refused(capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    err = capsys.readouterr().err
    for fragment in ("keeps everything inside one process", "ipc://", *fragments):
        assert fragment in err, err


def test_serve_with_workers_refuses_memory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KANAL_LAYER", "memory://?capacity=50")
    assert main(["serve", "tests.server.apps:pid_app", "--workers", "3", "--port", "0"]) == 2
    refused(capsys, "kanal serve --workers 3", "'memory://?capacity=50' ($KANAL_LAYER)")


def test_serve_bridge_refuses_memory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KANAL_LAYER", "memory://")
    assert main(["serve", "--bridge", "--port", "0"]) == 2
    refused(capsys, "kanal serve --bridge")


@pytest.mark.parametrize("bridge", [False, True])
def test_worker_refuses_memory(capsys: pytest.CaptureFixture[str], bridge: bool) -> None:
    args = ["--bridge"] if bridge else ["jobs"]
    assert main(["worker", "tests.server.apps:pid_app", *args, "--layer", "memory://"]) == 2
    refused(capsys, "kanal worker", "'memory://' (--layer)")


def test_worker_refuses_a_framework_configured_memory_layer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # What kanal.django does for CHANNEL_LAYERS = {"default": "memory://"}.
    set_default_layer_provider(InMemoryChannelLayer)
    try:
        assert main(["worker", "tests.server.apps:pid_app", "jobs"]) == 2
    finally:
        set_default_layer_provider(None)
        reset_channel_layers()
    refused(capsys, "InMemoryChannelLayer (configured)")


def test_scheduler_refuses_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scheduler", "--layer", "memory://"]) == 2
    refused(capsys, "kanal scheduler")


def test_without_a_layer_the_processes_share_ipc_named_after_the_project(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    url = cli._shared_layer("kanal worker", None)
    assert url == os.environ["KANAL_LAYER"] == cli.default_shared_layer_url()
    assert url.startswith("ipc://kanal-")
    other = tmp_path / "other-project"
    other.mkdir()
    monkeypatch.chdir(other)
    assert cli.default_shared_layer_url() != url  # another project: apart
    # A layer given on the command line is exported for the application's code.
    assert cli._shared_layer("kanal worker", "ipc://mine") == "ipc://mine"
    assert os.environ["KANAL_LAYER"] == "ipc://mine"


async def test_chat_on_serve_with_two_workers_reaches_every_member(short_tmp: Path) -> None:
    """The case that lost lines before: the chat example, ``--workers 2``, no layer set."""
    port = free_port()
    env = {"KANAL_LAYER": "", "XDG_RUNTIME_DIR": str(short_tmp)}
    command = child_process(
        "-m",
        "kanal.cli",
        "serve",
        "examples.chat.app:application",
        "--port",
        str(port),
        "--workers",
        "2",
        env=env,
    )
    async with command as server:
        found = await server.wait_for(r"uses (ipc://\S+), shared by")
        await server.wait_for("all 2 workers ready")
        name = found.group(1).removeprefix("ipc://")
        directory = short_tmp / f"kanal-ipc-{os.getuid()}" / name
        clients: list[websockets.ClientConnection] = []
        try:
            # Connect until both worker processes serve someone (each joins the layer
            # directory then), and at least eight clients are in the room.
            async with asyncio.timeout(30):
                while len(clients) < 8 or len(list(directory.glob("*.lock"))) < 2:
                    ws = await websockets.connect(
                        f"ws://127.0.0.1:{port}/ws/chat/lobby/?name=c{len(clients)}",
                        origin=f"http://127.0.0.1:{port}",
                    )
                    clients.append(ws)
                    assert json.loads(await ws.recv())["kind"] == "welcome"
            for index, ws in enumerate(clients):
                await ws.send(json.dumps({"text": f"line {index}"}))

            async def lines(ws: websockets.ClientConnection) -> set[str]:
                seen: set[str] = set()
                while len(seen) < len(clients):
                    event = json.loads(await ws.recv())
                    if event["kind"] == "message":
                        seen.add(event["text"])
                return seen

            async with asyncio.timeout(20):
                every = await asyncio.gather(*(lines(ws) for ws in clients))
            expected = {f"line {index}" for index in range(len(clients))}
            assert all(seen == expected for seen in every)
        finally:
            for ws in clients:
                await ws.close()
        assert await server.stop() == 0


WORKER_APPS = Path(__file__).resolve().parent / "worker"


@pytest.fixture
def project(short_tmp: Path) -> Path:
    """A project directory, for the default layer's name."""
    directory = short_tmp / "project"
    directory.mkdir()
    return directory


async def test_workers_started_next_to_each_other_share_the_default_layer(
    short_tmp: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ``kanal worker`` processes started in one project directory, no layer set:
    each job sent to their named channel is done once, by one of them, and their service
    answers calls."""
    from kanal.layers import layer_from_url
    from kanal.worker import call

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_tmp))
    monkeypatch.chdir(project)
    url = cli.default_shared_layer_url()
    here = WORKER_APPS
    env = {"KANAL_LAYER": "", "XDG_RUNTIME_DIR": str(short_tmp)}
    args = ("-m", "kanal.cli", "worker", "worker_apps:tasks", "jobs", "whoami")
    async with (
        child_process(*args, env=env, cwd=project, path=(here,)) as first,
        child_process(*args, env=env, cwd=project, path=(here,)) as second,
    ):
        for process in (first, second):
            assert (await process.wait_for(r"uses (ipc://\S+), shared")).group(1) == url
            await process.wait_for("worker listening on")
        layer = layer_from_url(url)
        try:
            report_to = await layer.new_channel()
            for n in range(40):
                await layer.send("jobs", {"type": "job.run", "n": n, "report_to": report_to})
            async with asyncio.timeout(15):
                reports = [await layer.receive(report_to) for _ in range(40)]
            assert sorted(report["n"] for report in reports) == list(range(40))
            assert {report["pid"] for report in reports} <= {first.pid, second.pid}
            answer = await call("whoami", {"type": "whoami", "payload": [1]}, layer=layer)
            assert answer["echo"] == [1] and answer["pid"] in {first.pid, second.pid}
        finally:
            await layer.close()
        assert await first.stop() == 0
