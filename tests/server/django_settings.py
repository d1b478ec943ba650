"""Minimal settings of the Django project served by ``kanal serve`` in the CLI tests."""

SECRET_KEY = "kanal-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.server.django_urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
