"""Choosing a layer by URL and the shared per-process instances."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from kanal.exceptions import ConfigError
from kanal.layers import (
    BaseChannelLayer,
    InMemoryChannelLayer,
    get_channel_layer,
    layer_from_url,
    register_backend,
    reset_channel_layers,
)


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    reset_channel_layers()
    yield
    reset_channel_layers()


def test_memory_url_with_options() -> None:
    layer = layer_from_url(
        "memory://?capacity=7&expiry=2.5&group_expiry=30&max_message_size=2048"
        "&channel_capacity=http.*:50,jobs:3"
    )
    assert isinstance(layer, InMemoryChannelLayer)
    assert layer.capacity == 7
    assert layer.expiry == 2.5
    assert layer.group_expiry == 30
    assert layer.codec.max_message_size == 2048
    assert layer.get_capacity("http.request") == 50
    assert layer.get_capacity("jobs") == 3
    assert layer.get_capacity("other") == 7


def test_keyword_options_override_the_url() -> None:
    layer = layer_from_url("memory://?capacity=7", capacity=9)
    assert layer.capacity == 9


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuch://x", "no channel layer for the URL 'nosuch://x'; known schemes: "),
        ("localhost:6379", "no channel layer for the URL"),
        ("just-a-name", "needs a scheme"),
        ("memory://?capacity=0", "capacity=.0.*positive"),
        ("memory://?capacity=lots", "capacity='lots'"),
        ("memory://?capcity=5", "unknown option 'capcity'.*known options: capacity"),
        ("memory://?channel_capacity=nocolon", "pattern:capacity"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        layer_from_url(url)


def test_bad_constructor_options() -> None:
    with pytest.raises(ConfigError, match="capacity must be a positive integer"):
        InMemoryChannelLayer(capacity=-1)
    with pytest.raises(ConfigError, match="expiry"):
        InMemoryChannelLayer(expiry=0)
    with pytest.raises(ConfigError, match="channel_capacity for 'x' must be"):
        InMemoryChannelLayer(channel_capacity={"x": 0})
    with pytest.raises(ConfigError, match="glob strings or compiled regexes"):
        InMemoryChannelLayer(channel_capacity={3: 1})
    with pytest.raises(TypeError):
        InMemoryChannelLayer(hosts=["redis://x"])  # a Redis option, not a memory one


def test_get_channel_layer_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANAL_LAYER", "memory://?capacity=11")
    layer = get_channel_layer()
    assert layer.capacity == 11
    assert get_channel_layer() is layer
    monkeypatch.delenv("KANAL_LAYER")
    default = get_channel_layer()
    assert default is not layer and default.capacity == 100


async def test_closed_shared_layer_is_replaced() -> None:
    layer = get_channel_layer("memory://")
    await layer.close()
    again = get_channel_layer("memory://")
    assert again is not layer and not again.closed


def test_register_backend() -> None:
    class Custom(InMemoryChannelLayer):
        pass

    register_backend("custom", Custom)
    assert type(layer_from_url("custom://?capacity=3")) is Custom
    register_backend("custom-by-name", "kanal.layers:InMemoryChannelLayer")
    assert type(layer_from_url("custom-by-name://")) is InMemoryChannelLayer


def test_base_class_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        BaseChannelLayer()  # type: ignore[abstract]


def test_capacity_cache_follows_patterns() -> None:
    layer = InMemoryChannelLayer(channel_capacity=[(re.compile("^a"), 5), ("a*", 9)])
    assert layer.get_capacity("abc") == 5  # first match wins, in order
    assert layer.get_capacity("abc") == 5


def test_missing_backend_module_names_the_right_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scheme whose module cannot be imported says which extra to install, spelt right."""
    import sys

    import kanal.layers._registry as registry

    monkeypatch.setitem(sys.modules, "kanal.layers.redis", None)  # makes the import fail
    monkeypatch.setitem(registry._BACKENDS, "redis", "kanal.layers.redis:RedisChannelLayer")
    with pytest.raises(ConfigError, match=re.escape("pip install 'kanal[redis]'")):
        layer_from_url("redis://127.0.0.1:1/0")
    monkeypatch.setitem(registry._BACKENDS, "thirdparty", "no_such_package_for_kanal:Layer")
    with pytest.raises(
        ConfigError, match=re.escape("'no_such_package_for_kanal:Layer' cannot be imported")
    ):
        layer_from_url("thirdparty://")


# A package missing from the redis extra: an import of it fails as if it were not installed.
_WITHOUT = """
import sys
sys.modules[sys.argv[1]] = None
from kanal.exceptions import ConfigError, MissingDependency
from kanal.layers import layer_from_url
try:
    import kanal.layers.redis
except MissingDependency as exc:
    print(exc.extra, exc.name, exc, sep="|")
try:
    layer_from_url("redis://127.0.0.1:1/0")
except ConfigError as exc:
    print(exc)
"""


@pytest.mark.parametrize("package", ["redis", "hiredis", "cryptography"])
def test_redis_layer_without_its_extra_says_which_to_install(package: str) -> None:
    """Each package of the redis extra, missing, gives an error that names the extra."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT, package], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    missing, from_url = done.stdout.splitlines()
    extra, name, message = missing.split("|")
    assert (extra, name.partition(".")[0]) == ("redis", package)
    assert "pip install 'kanal[redis]'" in message
    assert from_url.startswith("the redis:// layer cannot be used: ")
    assert "pip install 'kanal[redis]'" in from_url


def test_backend_that_is_not_a_layer_class_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kanal.layers._registry as registry

    monkeypatch.setitem(registry._BACKENDS, "not-a-layer", "kanal.layers:NoSuchLayer")
    with pytest.raises(
        ConfigError, match=re.escape("'kanal.layers:NoSuchLayer' is not a BaseChannelLayer")
    ):
        layer_from_url("not-a-layer://")
    monkeypatch.setitem(registry._BACKENDS, "not-a-layer-either", "kanal.layers:Message")
    with pytest.raises(ConfigError, match="not a BaseChannelLayer subclass"):
        layer_from_url("not-a-layer-either://")
