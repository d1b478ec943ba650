"""Django with ``kanal.django`` installed, for the tests of this directory."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# This directory has no __init__.py (as a package it would be imported as "django"): its
# helper modules are found on the path.
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


@pytest.fixture(scope="session")
def _migrated(django_settings: None) -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


@pytest.fixture
def kanal_django(_migrated: None) -> Iterator[None]:
    """``kanal.django`` in ``INSTALLED_APPS`` for one test (its ``ready()`` runs), then out."""
    from django.conf import settings
    from django.test import override_settings

    from kanal.django import channel_layers
    from kanal.layers import set_default_layer_provider

    apps = [name for name in settings.INSTALLED_APPS if name != "kanal.django"]
    try:
        with override_settings(INSTALLED_APPS=["kanal.django", *apps]):
            yield
    finally:
        set_default_layer_provider(None)
        channel_layers.reset()


@pytest.fixture(scope="session")
def postgres() -> Iterator[int]:
    """The port of a PostgreSQL server (the machine's on 5432, else one started for the run)."""
    from _postgres import postgres_server

    with postgres_server() as found:
        yield found
