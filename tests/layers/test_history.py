"""Group history's building blocks: positions, the option and its URL form, refusals."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kanal.exceptions import ConfigError, InvalidPosition, NoHistory
from kanal.layers import InMemoryChannelLayer, Position
from kanal.layers._history import HistoryPolicy, compile_history
from kanal.layers._options import history_list
from kanal.testing import ChannelLayerConformance
from kanal.testing._presence_conformance import PresenceConformance


def test_position_round_trips_through_its_string() -> None:
    position = Position("a1b2c3", 17)
    assert str(position) == "a1b2c3:17"
    assert Position.parse("a1b2c3:17") == position
    assert Position.parse(position) is position


@pytest.mark.parametrize(
    "bad", ["", "17", "a1:", ":17", "a1:-1", "a1:1.5", "a b:1", "a1:١٢", "a1:" + "9" * 20]
)
def test_malformed_positions_are_refused(bad: str) -> None:
    with pytest.raises(InvalidPosition):
        Position.parse(bad)


def test_history_option_from_a_url() -> None:
    assert history_list("chat.*:100:300,news.*:20") == [
        ("chat.*", {"size": 100, "ttl": 300.0}),
        ("news.*", {"size": 20}),
    ]
    layer = InMemoryChannelLayer.from_url("memory://?history=chat.*:50:30")
    assert layer.history_policy("chat.lobby") == HistoryPolicy(50, 30.0)
    assert layer.history_policy("news.today") is None
    for bad in ("chat.*", "chat.*:0", "chat.*:10:-1", ":10"):
        with pytest.raises(ConfigError, match="history"):
            InMemoryChannelLayer.from_url(f"memory://?history={bad}")


def test_history_option_first_matching_pattern_wins() -> None:
    layer = InMemoryChannelLayer(
        history={re.compile(r"chat\.vip\..*"): {"size": 1000}, "chat.*": HistoryPolicy(10, 5)}
    )
    assert layer.history_policy("chat.vip.room") == HistoryPolicy(1000)
    assert layer.history_policy("chat.room") == HistoryPolicy(10, 5.0)
    assert compile_history(None) == []


@pytest.mark.parametrize(
    "spec",
    [{"chat.*": {"size": 0}}, {"chat.*": {"ttl": 0}}, {"chat.*": {"length": 3}}, {3: {}}],
)
def test_bad_history_options_are_config_errors(spec: Any) -> None:
    with pytest.raises(ConfigError):
        InMemoryChannelLayer(history=spec)


class _NoHistoryLayer(InMemoryChannelLayer):
    """A backend that keeps no history (as a third party's might)."""

    supports_history = False


class TestBackendWithoutHistory(ChannelLayerConformance):
    """The conformance suite's history part, for a backend without history: it checks
    the clear refusals instead (the rest of the suite runs for the memory backend)."""

    def make_layer(self, **options: Any) -> InMemoryChannelLayer:
        return _NoHistoryLayer(**options)


# Only the history part of the suite matters for this backend (the rest runs for memory).
for _name in [*vars(ChannelLayerConformance), *vars(PresenceConformance)]:
    if _name.startswith("test_"):
        setattr(TestBackendWithoutHistory, _name, None)


def test_group_history_without_history_is_no_history() -> None:
    import asyncio

    async def main() -> None:
        layer = InMemoryChannelLayer()
        with pytest.raises(NoHistory, match="no pattern"):
            await layer.group_history("room")
        await layer.close()

    asyncio.run(main())


def test_direct_broadcasts_carry_their_position_in_the_text() -> None:
    from kanal.exceptions import InvalidMessage
    from kanal.layers import direct_message, direct_text

    message = direct_message("g", text='{"line": "hi"}', position_field="pos")
    assert direct_text(dict(message))["text"] == '{"line": "hi"}'  # no position yet
    message["position"] = "e1:7"
    assert direct_text(message)["text"] == '{"pos":"e1:7","line": "hi"}'
    empty = direct_message("g", text="{}", position_field="pos") | {"position": "e1:8"}
    assert direct_text(empty)["text"] == '{"pos":"e1:8"}'
    for bad in ({"text": "[1]"}, {"bytes_data": b"{}"}, {"text": "{}", "field": "a b"}):
        field = bad.pop("field", "pos")
        with pytest.raises(InvalidMessage):
            direct_message("g", position_field=field, **bad)  # type: ignore[arg-type]
