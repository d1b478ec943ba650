"""``kanal worker`` on the command line."""

from __future__ import annotations

import pytest

from kanal.cli import main


def test_worker_with_an_unknown_app_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "no_such_module_here:app", "jobs"]) == 2
    assert "cannot import module 'no_such_module_here'" in capsys.readouterr().err


def test_worker_needs_a_channel_or_bridge(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "kanal.bridge.asgi:application"]) == 2
    assert "needs CHANNEL names" in capsys.readouterr().err
    assert main(["worker", "--bridge", "kanal.bridge.asgi:application", "jobs"]) == 2
    assert "drop the channel names ['jobs']" in capsys.readouterr().err


def test_serve_bridge_takes_no_app(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--bridge", "myapp:application"]) == 2
    assert "give the application to `kanal worker --bridge`" in capsys.readouterr().err
    assert main(["serve"]) == 2
    assert "needs an application" in capsys.readouterr().err


def test_worker_refuses_a_process_specific_channel(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "kanal.routing:ProtocolTypeRouter", "specific.a!b"]) == 2
    assert "process-specific" in capsys.readouterr().err


def test_scheduler_with_bad_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scheduler", "kanal.worker:__all__"]) == 2
    assert "not a kanal.worker.Job" in capsys.readouterr().err
    assert main(["scheduler", "no_such_module_here:jobs"]) == 2
    assert "cannot load jobs" in capsys.readouterr().err
    assert main(["scheduler", "kanal.worker:SCHEDULER_CHANNEL.__len__"]) == 2
    assert "not a list of kanal.worker.Job" in capsys.readouterr().err
    # The module alone means its `jobs`, like the `:jobs` one may leave out.
    assert main(["scheduler", "kanal.worker"]) == 2
    err = capsys.readouterr().err
    assert "cannot load jobs from 'kanal.worker'" in err
    assert "has no attribute 'jobs'" in err
