"""The Django app ``kanal.django``: put it in ``INSTALLED_APPS`` (before staticfiles)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig, apps
from django.core import checks

__all__ = ["KanalConfig"]


class KanalConfig(AppConfig):
    """Wires kanal into the project when Django starts.

    ``kanal.layers.get_channel_layer()`` returns ``CHANNEL_LAYERS["default"]``; changing
    ``CHANNEL_LAYERS`` (``override_settings``) drops the shared instances; when Channels is
    installed too, kanal's ``ChannelFull`` becomes one of Channels'; every sync handler kanal
    runs in a thread (sync consumers, ``database_sync_to_async``) closes stale database
    connections before and after, as Django's request cycle does.
    """

    name = "kanal.django"
    label = "kanal"
    verbose_name = "kanal"

    def ready(self) -> None:
        """Install the layer provider, the settings hook and the database hooks."""
        from django.core.signals import setting_changed

        from kanal.django._db import install_connection_hooks
        from kanal.django._layers import channel_layers, default_layer
        from kanal.exceptions import adopt_channels_errors
        from kanal.layers import set_default_layer_provider

        set_default_layer_provider(default_layer)

        def layers_changed(*, setting: str, **kwargs: Any) -> None:
            if setting == "CHANNEL_LAYERS":
                channel_layers.reset()

        setting_changed.connect(layers_changed, weak=False, dispatch_uid="kanal-layers")
        adopt_channels_errors()
        install_connection_hooks()
        checks.register(check_app_order)


def check_app_order(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when staticfiles' ``runserver`` would win over kanal's (it comes first)."""
    names = [config.name for config in apps.get_app_configs()]
    if "django.contrib.staticfiles" in names and names.index(
        "django.contrib.staticfiles"
    ) < names.index("kanal.django"):
        return [
            checks.Warning(
                "django.contrib.staticfiles comes before kanal.django in INSTALLED_APPS, so "
                "`manage.py runserver` is Django's (no WebSockets)",
                hint="put 'kanal.django' above 'django.contrib.staticfiles'",
                id="kanal.W001",
            )
        ]
    return []
