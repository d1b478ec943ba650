"""kanal.bridge's state table (its exports are checked in tests/test_exports.py, and the
direction of its imports in tests/test_layering.py)."""

from __future__ import annotations

import kanal.bridge


def test_every_state_has_its_transitions_and_closed_is_final() -> None:
    states = set(kanal.bridge.State)
    assert set(kanal.bridge.TRANSITIONS) == states
    for targets in kanal.bridge.TRANSITIONS.values():
        assert targets <= states
    assert not kanal.bridge.TRANSITIONS[kanal.bridge.State.CLOSED]
