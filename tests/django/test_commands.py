"""``manage.py runworker`` and ``runserver``'s autoreload, in real processes."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest
from _example import example_process

from kanal.layers.redis import RedisChannelLayer
from kanal.testing import RedisServer, free_port

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent


def project_env(path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(path),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@pytest.mark.redis
async def test_runworker_runs_the_channel_routes(redis_server: RedisServer) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/6"
    command = [sys.executable, "-m", "django", "runworker", "thumbnails"]
    async with example_process(
        command, project_env(HERE, KANAL_LAYER=url), "worker listening on thumbnails"
    ):
        layer = RedisChannelLayer(hosts=[url])
        try:
            reply = await layer.new_channel()
            await layer.send(
                "thumbnails", {"type": "thumbnail.make", "name": "cat", "reply_channel": reply}
            )
            done = await layer.receive(reply)
            assert (done["type"], done["name"]) == ("thumbnail.done", "CAT")
            assert done["pid"] != os.getpid()
        finally:
            await layer.close()


async def test_runserver_reloads_on_a_code_change(tmp_path: Path) -> None:
    shutil.copytree(HERE / "project", tmp_path / "project")
    port = free_port()
    command = [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}"]
    env = project_env(tmp_path, TEST_SQLITE=str(tmp_path / "db.sqlite3"))
    async with (
        example_process(command, env, "kanal server ready on") as server,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(f"http://127.0.0.1:{port}/version/")).text == "1"
        (tmp_path / "project" / "version.py").write_text("VERSION = 2\n")
        await server.wait_for_line("kanal server ready on")  # the reloaded process
        assert (await client.get(f"http://127.0.0.1:{port}/version/")).text == "2"


@pytest.mark.parametrize(
    ("debug", "options", "serves"),
    [
        (True, {}, True),
        (False, {}, False),
        (False, {"insecure_serving": True}, True),
        (True, {"use_static_handler": False}, False),
    ],
)
def test_runserver_serves_static_files_as_djangos_does(
    kanal_django: None, debug: bool, options: dict[str, bool], serves: bool
) -> None:
    """In DEBUG, or with --insecure; never with --nostatic (staticfiles' rules)."""
    from django.conf import settings
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.test import override_settings

    from kanal.django.management.commands.runserver import Command

    apps = [*settings.INSTALLED_APPS, "django.contrib.staticfiles"]
    with override_settings(DEBUG=debug, INSTALLED_APPS=apps, STATIC_URL="/static/"):
        application = Command().get_application(options)
    assert isinstance(application, ASGIStaticFilesHandler) is serves
