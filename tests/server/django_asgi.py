"""A Django project's ASGI entry point, for ``kanal serve tests.server.django_asgi:application``."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.server.django_settings")

from django.core.asgi import get_asgi_application

application = get_asgi_application()
