"""``kanal worker`` on the command line."""

from __future__ import annotations

import pytest

from kanal.cli import main


def test_worker_with_an_unknown_app_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "no_such_module_here:app", "jobs"]) == 2
    assert "cannot import module 'no_such_module_here'" in capsys.readouterr().err


def test_worker_needs_a_channel(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["worker", "mod:app"])
    assert info.value.code == 2
    assert "CHANNEL" in capsys.readouterr().err


def test_worker_refuses_a_process_specific_channel(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "kanal.routing:ProtocolTypeRouter", "specific.a!b"]) == 2
    assert "process-specific" in capsys.readouterr().err


def test_scheduler_with_bad_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scheduler", "kanal.worker:__all__"]) == 2
    assert "not a kanal.worker.Job" in capsys.readouterr().err
    assert main(["scheduler", "no_such_module_here:jobs"]) == 2
    assert "cannot load jobs" in capsys.readouterr().err
