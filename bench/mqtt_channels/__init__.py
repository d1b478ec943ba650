"""The peer of ``bench.mqtt_apps`` for ``bench.mqtt``: mqttasgi with Django Channels.

``mqttasgi`` runs the ``mqtt`` side, Daphne the WebSocket side, channels_redis joins them
(``CHAT_REDIS_URL`` names the Redis server).
"""
