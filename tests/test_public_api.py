"""The curated public API: what each package exports, and that every name resolves."""

from __future__ import annotations

import importlib

import pytest

import kanal
import kanal.exceptions
import kanal.layers

LAYERS_API = {
    "DEFAULT_LAYER_URL",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_NAME_LENGTH",
    "BaseChannelLayer",
    "ChannelFull",
    "ChannelStats",
    "GroupStats",
    "InMemoryChannelLayer",
    "InvalidMessage",
    "InvalidName",
    "LayerClosed",
    "LayerError",
    "LayerStats",
    "LayerUnavailable",
    "Message",
    "MessageCodec",
    "MessageTooLarge",
    "ReceiveTimeout",
    "SyncChannelLayer",
    "get_channel_layer",
    "layer_from_url",
    "non_local_name",
    "register_backend",
    "require_valid_channel_name",
    "require_valid_group_name",
    "reset_channel_layers",
    "set_default_layer_provider",
}


def test_layers_exports() -> None:
    assert set(kanal.layers.__all__) == LAYERS_API


@pytest.mark.parametrize("module", ["kanal", "kanal.layers", "kanal.exceptions", "kanal.testing"])
def test_every_exported_name_exists_and_is_documented(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        value = getattr(mod, name)
        if callable(value) and not name.startswith("__"):
            assert value.__doc__, f"{module}.{name} has no docstring"


def test_every_error_is_a_kanal_error() -> None:
    for name in kanal.exceptions.__all__:
        error = getattr(kanal.exceptions, name)
        assert issubclass(error, kanal.KanalError), name
        assert name in kanal.exceptions.__doc__, f"{name} is missing from the error tree drawing"


def test_errors_are_also_the_matching_builtins() -> None:
    from kanal.exceptions import InvalidName, LayerUnavailable, ReceiveTimeout

    assert issubclass(InvalidName, TypeError)  # what Channels raises for a bad name
    assert issubclass(ReceiveTimeout, TimeoutError)
    assert issubclass(LayerUnavailable, ConnectionError)
