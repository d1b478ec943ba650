"""``CHANNEL_LAYERS`` from Django's settings, as Channels reads it, kanal's URLs accepted too.

::

    CHANNEL_LAYERS = {"default": "redis://localhost:6379/0?capacity=200"}
    CHANNEL_LAYERS = {"default": {
        "BACKEND": "kanal.layers.redis.RedisChannelLayer",
        "CONFIG": {"hosts": [("localhost", 6379)]},
    }}
    CHANNEL_LAYERS = {"default": {"URL": "redis://localhost:6379/0", "CONFIG": {"expiry": 30}}}
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from kanal.exceptions import ConfigError
from kanal.layers import BaseChannelLayer, layer_from_url

__all__ = ["DEFAULT_CHANNEL_LAYER", "channel_layers", "get_channel_layer", "layer_from_settings"]

#: The alias Channels reads when none is given.
DEFAULT_CHANNEL_LAYER = "default"


def layer_from_settings(alias: str, entry: object) -> BaseChannelLayer:
    """A new layer for a ``CHANNEL_LAYERS`` entry: a URL, ``{"URL": ...}``, ``{"BACKEND": ...}``.

    ``CONFIG`` holds the constructor's keywords (with ``URL``: overrides of the query string).
    """
    if isinstance(entry, str):
        return layer_from_url(entry)
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"CHANNEL_LAYERS[{alias!r}] must be a layer URL or a dict with BACKEND or URL, "
            f"not {entry!r}"
        )
    config = entry.get("CONFIG") or {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"CHANNEL_LAYERS[{alias!r}]['CONFIG'] must be a dict, not {config!r}")
    unknown = set(entry) - {"BACKEND", "URL", "CONFIG", "TEST_CONFIG"}
    if unknown:
        raise ConfigError(f"CHANNEL_LAYERS[{alias!r}] has unknown keys {sorted(unknown)}")
    if ("URL" in entry) == ("BACKEND" in entry):
        raise ConfigError(f"CHANNEL_LAYERS[{alias!r}] needs either BACKEND or URL (not both)")
    if "URL" in entry:
        return layer_from_url(entry["URL"], **config)
    from django.utils.module_loading import import_string

    try:
        backend = import_string(entry["BACKEND"])
    except ImportError as exc:
        raise ConfigError(
            f"CHANNEL_LAYERS[{alias!r}]: cannot import BACKEND {entry['BACKEND']!r} ({exc})"
        ) from exc
    layer: BaseChannelLayer = backend(**config)
    return layer


class ChannelLayerManager:
    """The layers of ``CHANNEL_LAYERS``, one shared instance per alias (Channels' manager).

    A closed instance is replaced on the next look-up, as kanal's registry does. The settings
    are read on first use and again after :meth:`reset` (``override_settings`` in tests).
    """

    def __init__(self) -> None:
        self.backends: dict[str, BaseChannelLayer] = {}
        self._lock = threading.Lock()

    @property
    def configs(self) -> Mapping[str, object]:
        """``settings.CHANNEL_LAYERS`` (empty when unset)."""
        from django.conf import settings

        configured = getattr(settings, "CHANNEL_LAYERS", None) or {}
        if not isinstance(configured, Mapping):
            raise ConfigError(f"CHANNEL_LAYERS must be a dict of aliases, not {configured!r}")
        return configured

    def __getitem__(self, alias: str) -> BaseChannelLayer:
        with self._lock:
            layer = self.backends.get(alias)
            if layer is None or getattr(layer, "closed", False):
                configs = self.configs
                if alias not in configs:
                    raise ConfigError(
                        f"no channel layer {alias!r} in CHANNEL_LAYERS "
                        f"(configured: {sorted(configs) or 'none'})"
                    )
                layer = self.backends[alias] = layer_from_settings(alias, configs[alias])
            return layer

    def __contains__(self, alias: object) -> bool:
        return alias in self.configs

    def reset(self) -> None:
        """Forget the instances (it does not close them); the settings are read again."""
        with self._lock:
            self.backends.clear()


#: The process's layers by alias, as ``channels.layers.channel_layers``.
channel_layers = ChannelLayerManager()


def get_channel_layer(alias: str = DEFAULT_CHANNEL_LAYER) -> BaseChannelLayer | None:
    """The shared layer of ``CHANNEL_LAYERS[alias]``, or ``None`` if there is none (Channels' API).

    ``kanal.layers.get_channel_layer()`` without a URL returns the ``"default"`` one too once
    ``kanal.django`` is in ``INSTALLED_APPS`` and ``CHANNEL_LAYERS`` is set.
    """
    if alias not in channel_layers:
        return None
    return channel_layers[alias]


def default_layer() -> BaseChannelLayer:
    """The provider behind ``kanal.layers.get_channel_layer()`` in a Django project.

    ``CHANNEL_LAYERS["default"]`` when set; else what kanal picks without Django
    (``KANAL_LAYER``, then ``memory://``), through kanal's own registry.
    """
    if DEFAULT_CHANNEL_LAYER in channel_layers:
        return channel_layers[DEFAULT_CHANNEL_LAYER]
    from kanal.layers import DEFAULT_LAYER_URL
    from kanal.layers import get_channel_layer as registry_layer

    return registry_layer(os.environ.get("KANAL_LAYER") or DEFAULT_LAYER_URL)
