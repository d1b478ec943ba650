"""Choosing a layer by URL: ``memory://``, ``ipc://``, ``redis://host:6379/0``.

Backends register a scheme; third-party packages can also register through the
``kanal.layers`` entry-point group (``name = "package.module:LayerClass"``), so that a new
backend plugs in without touching kanal.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

from kanal.exceptions import ConfigError, MissingDependency
from kanal.layers._base import BaseChannelLayer

__all__ = [
    "DEFAULT_LAYER_URL",
    "backend_for",
    "get_channel_layer",
    "layer_from_url",
    "layer_is_configured",
    "register_backend",
    "reset_channel_layers",
    "set_default_layer_provider",
    "shared_layers",
]

#: Used when neither an argument nor ``KANAL_LAYER`` names a layer.
DEFAULT_LAYER_URL = "memory://"

# Lazily imported, so that choosing memory:// never imports redis.
_BACKENDS: dict[str, str | type[BaseChannelLayer]] = {
    "memory": "kanal.layers._memory:InMemoryChannelLayer",
    "ipc": "kanal.layers.ipc:IpcChannelLayer",
    "redis": "kanal.layers.redis:RedisChannelLayer",
    "rediss": "kanal.layers.redis:RedisChannelLayer",
    "redis+sentinel": "kanal.layers.redis:RedisChannelLayer",
}

# The pip extra that brings a scheme's dependencies, for the error when they are missing.
_EXTRAS = {"redis": "redis", "rediss": "redis", "redis+sentinel": "redis"}

_layers: dict[str, BaseChannelLayer] = {}
_lock = threading.Lock()
# Where get_channel_layer() without a URL finds its layer when a framework configured one
# (kanal.django: CHANNEL_LAYERS["default"]); None: KANAL_LAYER, else memory://.
_default_provider: Callable[[], BaseChannelLayer] | None = None


def register_backend(scheme: str, backend: str | type[BaseChannelLayer]) -> None:
    """Make URLs with ``scheme`` build ``backend`` (a class or ``"module:Class"``)."""
    _BACKENDS[scheme.lower()] = backend


def _resolve(scheme: str, url: str) -> type[BaseChannelLayer]:
    target = _BACKENDS.get(scheme)
    if target is None:
        for entry in entry_points(group="kanal.layers"):
            if entry.name == scheme:
                target = entry.value
                break
    if target is None:
        known = ", ".join(f"{name}://" for name in sorted(_BACKENDS))
        raise ConfigError(f"no channel layer for the URL {url!r}; known schemes: {known}")
    if isinstance(target, str):
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except MissingDependency as exc:  # it names the extra already
            raise ConfigError(f"the {scheme}:// layer cannot be used: {exc}") from exc
        except ImportError as exc:
            extra = _EXTRAS.get(scheme)
            hint = (
                f"is its extra installed? (pip install 'kanal[{extra}]')"
                if extra
                else "is the package that provides it installed?"
            )
            raise ConfigError(
                f"the {scheme}:// layer {target!r} cannot be imported ({exc}); {hint}"
            ) from exc
        found = getattr(module, attribute, None)
        if not (isinstance(found, type) and issubclass(found, BaseChannelLayer)):
            raise ConfigError(
                f"the {scheme}:// layer {target!r} is not a BaseChannelLayer subclass "
                f"(found {found!r})"
            )
        target = _BACKENDS[scheme] = found
    return target


def backend_for(url: str) -> type[BaseChannelLayer]:
    """The layer class ``url`` names (imported, not built)."""
    scheme = urlsplit(url).scheme.lower()
    if not scheme:
        raise ConfigError(f"a layer URL needs a scheme, like memory:// or redis://; got {url!r}")
    return _resolve(scheme, url)


def layer_is_configured() -> bool:
    """True if ``get_channel_layer()`` has a layer to use other than the default: a
    framework's (:func:`set_default_layer_provider`) or ``$KANAL_LAYER``."""
    return _default_provider is not None or bool(os.environ.get("KANAL_LAYER"))


def layer_from_url(url: str, **options: Any) -> BaseChannelLayer:
    """A new layer for ``url``; keyword options override the URL's query string."""
    return backend_for(url).from_url(url, **options)


def get_channel_layer(url: str | None = None) -> BaseChannelLayer:
    """The process's shared layer for ``url`` (default: ``$KANAL_LAYER``, else memory://).

    The same URL returns the same instance, so every consumer of a process shares one layer
    and one set of connections. A closed instance is replaced by a new one. Without a URL,
    a provider set with :func:`set_default_layer_provider` (Django's ``CHANNEL_LAYERS``)
    comes before ``KANAL_LAYER``.
    """
    if url is None:
        provider = _default_provider
        if provider is not None:
            return provider()
        url = os.environ.get("KANAL_LAYER") or DEFAULT_LAYER_URL
    with _lock:
        layer = _layers.get(url)
        if layer is None or layer.closed:
            layer = _layers[url] = layer_from_url(url)
        return layer


def shared_layers() -> dict[str, BaseChannelLayer]:
    """The open shared instances, by URL: what :func:`get_channel_layer` handed out."""
    with _lock:
        return {url: layer for url, layer in _layers.items() if not layer.closed}


def set_default_layer_provider(provider: Callable[[], BaseChannelLayer] | None) -> None:
    """Make ``get_channel_layer()`` without a URL return ``provider()`` (``None`` undoes it).

    The provider keeps its own shared instance; kanal.django sets one for ``CHANNEL_LAYERS``.
    """
    global _default_provider
    _default_provider = provider


def reset_channel_layers() -> None:
    """Forget the shared instances (tests use it between cases; it does not close them)."""
    with _lock:
        _layers.clear()
