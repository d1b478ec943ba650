"""A minimal Django Channels chat project: the peer of ``examples.chat`` in ``bench.chat_e2e``.

Served by Daphne (``daphne bench.channels_chat.asgi:application``) on channels_redis's
``RedisChannelLayer`` with its default settings; ``CHAT_REDIS_URL`` names the Redis server.
"""
