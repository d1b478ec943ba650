"""kanal.bridge's curated exports, and the direction of its imports."""

from __future__ import annotations

import inspect
import subprocess
import sys

import kanal.bridge

EXPECTED = {
    "BRIDGE_CHANNEL",
    "DEFAULT_ATTACH_TIMEOUT",
    "DEFAULT_DETACH_TIMEOUT",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_MAX_HELD",
    "TRANSITIONS",
    "BridgeApp",
    "BridgeStats",
    "BridgeWorker",
    "MessageType",
    "State",
    "scope_from_wire",
    "scope_to_wire",
}


def test_exports_are_curated_and_documented() -> None:
    assert set(kanal.bridge.__all__) == EXPECTED
    for name in kanal.bridge.__all__:
        value = getattr(kanal.bridge, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__doc__, f"kanal.bridge.{name} has no docstring"
            for attribute, member in vars(value).items():
                if inspect.isfunction(member) and not attribute.startswith("_"):
                    assert member.__doc__, f"kanal.bridge.{name}.{attribute} has no docstring"


def test_every_state_has_its_transitions_and_closed_is_final() -> None:
    states = set(kanal.bridge.State)
    assert set(kanal.bridge.TRANSITIONS) == states
    for targets in kanal.bridge.TRANSITIONS.values():
        assert targets <= states
    assert not kanal.bridge.TRANSITIONS[kanal.bridge.State.CLOSED]


def test_the_worker_package_does_not_import_the_bridge() -> None:
    # A fresh interpreter: this one has imported kanal.bridge already.
    code = "import sys, kanal.worker; print(sorted(m for m in sys.modules if 'bridge' in m))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
