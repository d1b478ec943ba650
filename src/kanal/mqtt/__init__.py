"""The MQTT interface server: a broker's messages become events for kanal applications.

::

    from kanal.mqtt import MqttConfig, MqttServer

    server = MqttServer(application, MqttConfig(broker="mqtt://127.0.0.1:1883"))
    await server.run()

or ``kanal mqtt module:application --broker mqtt://127.0.0.1:1883``. The application gets a
scope of type ``mqtt``; :class:`kanal.consumers.MqttConsumer` is the consumer for it.

Needs the ``mqtt`` extra (``pip install 'kanal[mqtt]'``: aiomqtt, with paho-mqtt); without
it, importing this package raises :class:`~kanal.exceptions.MissingDependency`.
"""

from kanal.exceptions import MissingDependency, MqttError

# The packages the mqtt extra installs, by their import names.
_EXTRA_PACKAGES = frozenset({"aiomqtt", "paho"})

try:
    from kanal.mqtt._config import MqttConfig
    from kanal.mqtt._server import MqttServer, MqttStats
except ModuleNotFoundError as exc:
    if (exc.name or "").partition(".")[0] not in _EXTRA_PACKAGES:
        raise
    raise MissingDependency(
        "kanal.mqtt needs the mqtt extra: pip install 'kanal[mqtt]' "
        f"(no module named {exc.name!r})",
        extra="mqtt",
        name=exc.name,
    ) from exc

__all__ = ["MqttConfig", "MqttError", "MqttServer", "MqttStats"]
