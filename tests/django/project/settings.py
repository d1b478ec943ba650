"""A small Django project for kanal.django's process tests (runworker, reload, PostgreSQL).

The environment picks the database (``TEST_PG_PORT`` and ``TEST_PG_NAME`` for PostgreSQL,
else ``TEST_SQLITE``), ``CONN_MAX_AGE`` (``TEST_CONN_MAX_AGE``) and the layer (``KANAL_LAYER``,
as a Channels ``BACKEND`` with ``TEST_CHANNELS_BACKEND``).
"""

import os

SECRET_KEY = "kanal-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "kanal.django",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]
ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"
USE_TZ = True
if os.environ.get("TEST_PG_PORT"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": os.environ["TEST_PG_PORT"],
            "NAME": os.environ["TEST_PG_NAME"],
            "USER": "postgres",
            "CONN_MAX_AGE": int(os.environ.get("TEST_CONN_MAX_AGE", "0")),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("TEST_SQLITE", ":memory:"),
        }
    }
if os.environ.get("TEST_CHANNELS_BACKEND"):
    # As a Channels project writes it (Channels' own consumers read it too).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "kanal.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ["KANAL_LAYER"]]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": os.environ.get("KANAL_LAYER", "memory://")}
