"""Channel and group name rules, the same as Django Channels'."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kanal.exceptions import InvalidName
from kanal.layers import (
    MAX_NAME_LENGTH,
    non_local_name,
    require_valid_channel_name,
    require_valid_group_name,
)

ALLOWED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."


@given(st.text(alphabet=ALLOWED, min_size=1, max_size=MAX_NAME_LENGTH - 1))
def test_allowed_names_pass(name: str) -> None:
    assert require_valid_channel_name(name) == name
    assert require_valid_group_name(name) == name


@given(st.text(min_size=1, max_size=50).filter(lambda s: any(c not in ALLOWED for c in s)))
def test_other_characters_fail_for_groups(name: str) -> None:
    with pytest.raises(InvalidName) as info:
        require_valid_group_name(name)
    assert info.value.name == name and info.value.kind == "group"


@pytest.mark.parametrize("name", ["room\n", "specific.abc!x\n", "a\nb"])
def test_a_newline_is_never_part_of_a_name(name: str) -> None:
    with pytest.raises(InvalidName):
        require_valid_channel_name(name)
    with pytest.raises(InvalidName):
        require_valid_group_name(name)


def test_channels_compatibility_of_rules() -> None:
    assert require_valid_channel_name("specific.abc!def")
    assert require_valid_channel_name("specific.abc!")  # a send to a process inbox is allowed
    with pytest.raises(InvalidName, match="needs a suffix"):
        require_valid_channel_name("specific.abc!", receive=True)
    with pytest.raises(InvalidName):
        require_valid_group_name("group!x")
    with pytest.raises(InvalidName, match="shorter than 100"):
        require_valid_channel_name("x" * 100)
    with pytest.raises(TypeError, match="must be a str, not list"):
        require_valid_channel_name(["unhashable"])  # type: ignore[arg-type]


def test_non_local_name() -> None:
    assert non_local_name("specific.abc!xyz") == "specific.abc!"
    assert non_local_name("plain") == "plain"
