"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def django_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Configure Django once per test session with minimal settings (idempotent).

    Tests change what they need with ``django.test.override_settings``. The database is a
    file, not ``:memory:``: ORM calls run in threads, and each thread would get its own
    empty in-memory database.
    """
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="kanal-tests-only",
            INSTALLED_APPS=[
                "django.contrib.auth",
                "django.contrib.contenttypes",
                "django.contrib.sessions",
                "channels",
            ],
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.sqlite3",
                    "NAME": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
                }
            },
            ROOT_URLCONF=[],
            ALLOWED_HOSTS=["*"],
            CHANNEL_LAYERS={"default": {"BACKEND": "kanal.layers.InMemoryChannelLayer"}},
            USE_TZ=True,
        )
        import django

        django.setup()
