"""``CHANNEL_LAYERS`` through ``get_channel_layer()``, and origin checks on ``ALLOWED_HOSTS``."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

import kanal.layers
from kanal.django import AllowedHostsOriginValidator, OriginValidator, get_channel_layer
from kanal.exceptions import ConfigError
from kanal.layers import InMemoryChannelLayer
from kanal.testing import WebsocketCommunicator

pytestmark = pytest.mark.usefixtures("kanal_django")


@pytest.mark.parametrize(
    "entry",
    [
        "memory://?capacity=7",
        {"URL": "memory://?capacity=3", "CONFIG": {"capacity": 7}},
        {"BACKEND": "kanal.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 7}},
    ],
)
async def test_get_channel_layer_reads_channel_layers(entry: Any) -> None:
    with override_settings(CHANNEL_LAYERS={"default": entry, "other": "memory://"}):
        layer = kanal.layers.get_channel_layer()
        assert isinstance(layer, InMemoryChannelLayer) and layer.capacity == 7
        assert kanal.layers.get_channel_layer() is layer  # one shared instance
        assert get_channel_layer() is layer
        assert get_channel_layer("other") is not layer
        assert get_channel_layer("missing") is None
        await layer.close()
        assert kanal.layers.get_channel_layer() is not layer  # a closed one is replaced
        await kanal.layers.get_channel_layer().close()


async def test_changed_settings_give_a_new_layer_and_urls_still_work() -> None:
    with override_settings(CHANNEL_LAYERS={"default": "memory://?capacity=2"}):
        first = kanal.layers.get_channel_layer()
    with override_settings(CHANNEL_LAYERS={"default": "memory://?capacity=5"}):
        second = kanal.layers.get_channel_layer()
        assert second.capacity == 5
        # An explicit URL is kanal's registry, as without Django.
        assert kanal.layers.get_channel_layer("memory://?capacity=9").capacity == 9
    await first.close()
    await second.close()


async def test_without_channel_layers_kanal_layer_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANAL_LAYER", "memory://?capacity=11")
    kanal.layers.reset_channel_layers()
    with override_settings(CHANNEL_LAYERS=None):
        layer = kanal.layers.get_channel_layer()
        assert layer.capacity == 11
        await layer.close()
    kanal.layers.reset_channel_layers()


@pytest.mark.parametrize(
    "entry",
    [
        {"BACKEND": "no.such.Layer"},
        {"URL": "memory://", "BACKEND": "kanal.layers.InMemoryChannelLayer"},
        {"URL": "memory://", "OPTIONS": {}},
        ["memory://"],
        "nope://",
    ],
)
def test_bad_channel_layers_are_refused_with_their_alias(entry: Any) -> None:
    with override_settings(CHANNEL_LAYERS={"default": entry}), pytest.raises(ConfigError):
        kanal.layers.get_channel_layer()


async def handshake(app: Any, origin: str | None) -> bool:
    async def accept(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    headers = [(b"origin", origin.encode())] if origin else []
    ws = WebsocketCommunicator(app(accept), "/ws/", headers=headers)
    connected, _ = await ws.connect()
    if connected:
        await ws.disconnect()
    return connected


@pytest.mark.parametrize(
    ("hosts", "origin", "allowed"),
    [
        (["example.com"], "https://example.com", True),
        (["example.com"], "http://example.com:8000", True),
        (["example.com"], "https://evil.com", False),
        (["example.com"], "https://sub.example.com", False),
        ([".example.com"], "https://sub.example.com", True),
        ([".example.com"], "https://example.com", True),
        ([".example.com"], "https://notexample.com", False),
        (["example.com"], None, False),  # not a browser: refused unless "*"
        (["*"], None, True),
        (["*"], "https://anything.test", True),
        (["[::1]"], "http://[::1]:8000", True),
    ],
)
async def test_allowed_hosts_origin_validator(
    hosts: list[str], origin: str | None, allowed: bool
) -> None:
    with override_settings(ALLOWED_HOSTS=hosts, DEBUG=False):
        assert await handshake(AllowedHostsOriginValidator, origin) is allowed


async def test_debug_without_allowed_hosts_allows_localhost_only() -> None:
    with override_settings(ALLOWED_HOSTS=[], DEBUG=True):
        assert await handshake(AllowedHostsOriginValidator, "http://localhost:8000")
        assert await handshake(AllowedHostsOriginValidator, "http://127.0.0.1:8000")
        assert not await handshake(AllowedHostsOriginValidator, "http://example.com")


async def test_origin_validator_takes_full_origins_too() -> None:
    def app(inner: Any) -> Any:
        return OriginValidator(inner, ["https://app.example.com:8443", ".example.org"])

    assert await handshake(app, "https://app.example.com:8443")
    assert not await handshake(app, "https://app.example.com")
    assert await handshake(app, "http://www.example.org")
