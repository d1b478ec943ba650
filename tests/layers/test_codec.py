"""Message validation and serialisation (shared by every backend)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kanal.exceptions import InvalidMessage, MessageTooLarge
from kanal.layers import MessageCodec
from kanal.layers._codec import Decoded

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
messages = st.dictionaries(st.text(max_size=20), values, max_size=8)


@given(messages)
def test_round_trip(message: dict[str, Any]) -> None:
    codec = MessageCodec()
    decoded = codec.decode(codec.encode(message))
    assert decoded == message
    assert decoded is not message


def test_tuples_become_lists() -> None:
    codec = MessageCodec()
    assert codec.decode(codec.encode({"t": (1, (2, 3))})) == {"t": [1, [2, 3]]}


@pytest.mark.parametrize(
    ("message", "path"),
    [
        ({"a": {"b": [1, 2, {3}]}}, "message['a']['b'][2]"),
        ({"when": object()}, "message['when']"),
        ({"n": -(2**63) - 1}, "message['n']"),
        ({"d": {(1, 2): "tuple key"}}, "message['d'] key (1, 2)"),
    ],
)
def test_error_names_the_bad_value(message: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        MessageCodec().encode(message, "chat")
    assert info.value.path == path
    assert path in str(info.value)
    assert "'chat'" in str(info.value)


def test_top_level_must_be_dict_with_str_keys() -> None:
    with pytest.raises(InvalidMessage, match="must be a dict, not list"):
        MessageCodec().encode([1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidMessage, match="not a str: 1"):
        MessageCodec().encode({1: "x"})  # type: ignore[dict-item]


def test_size_limit_counts_serialised_bytes() -> None:
    codec = MessageCodec(max_message_size=100)
    codec.encode({"x": "a" * 90})
    with pytest.raises(MessageTooLarge) as info:
        codec.encode({"x": "a" * 200}, "big")
    assert info.value.size > 100
    assert info.value.limit == 100
    with pytest.raises(ValueError, match="positive"):
        MessageCodec(max_message_size=0)


def test_seal_and_open_wrap_the_bytes() -> None:
    class Reversed(MessageCodec):
        def seal(self, data: bytes) -> bytes:
            return data[::-1]

        def open(self, data: bytes) -> bytes:
            return data[::-1]

    codec = Reversed()
    data = codec.encode({"type": "x"})
    assert data != MessageCodec().encode({"type": "x"})
    assert codec.decode(data) == {"type": "x"}


def _containers(value: Any) -> list[Any]:
    """Every dict and list inside ``value`` (itself included), depth first."""
    found: list[Any] = []
    if isinstance(value, dict):
        found.append(value)
        for item in value.values():
            found += _containers(item)
    elif isinstance(value, list):
        found.append(value)
        for item in value:
            found += _containers(item)
    return found


@given(messages)
def test_decoded_once_copies_share_no_container(message: dict[str, Any]) -> None:
    """What a group message decoded once gives each receiver: equal, and its own at
    every depth (only immutable values are shared)."""
    codec = MessageCodec()
    shared = Decoded(codec.decode(codec.encode(message)))
    first, second = shared.fresh(), shared.fresh()
    assert first == message and second == message
    ids = {id(container) for container in _containers(first)}
    assert not ids & {id(container) for container in _containers(second)}


def test_decoded_refuses_what_is_nested_too_deeply() -> None:
    message: dict[str, Any] = {"type": "deep"}
    inner = message
    for _ in range(Decoded.MAX_DEPTH):
        inner["next"] = {}
        inner = inner["next"]
    with pytest.raises(ValueError, match="too deeply"):
        Decoded(message)
    del inner  # one level less is fine
    shallow: dict[str, Any] = {"type": "deep"}
    inner = shallow
    for _ in range(Decoded.MAX_DEPTH - 1):
        inner["next"] = {}
        inner = inner["next"]
    assert Decoded(shallow).fresh() == shallow
