"""Django settings of the benchmark's Channels chat: only what Channels needs."""

from __future__ import annotations

import os

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
USE_TZ = True
TIME_ZONE = "UTC"  # log times in UTC, like the rest of the benchmark
ASGI_APPLICATION = "bench.channels_chat.asgi.application"

# channels_redis's list layer with its defaults (capacity 100, expiry 60 s, group_expiry
# 86,400 s): the settings a Channels project gets when it names only the host.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ.get("CHAT_REDIS_URL", "redis://127.0.0.1:6379/0")]},
    }
}
