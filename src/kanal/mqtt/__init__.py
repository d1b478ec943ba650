"""The MQTT interface server: a broker's messages become events for kanal applications.

::

    from kanal.mqtt import MqttConfig, MqttServer

    server = MqttServer(application, MqttConfig(broker="mqtt://127.0.0.1:1883"))
    await server.run()

or ``kanal mqtt module:application --broker mqtt://127.0.0.1:1883``. The application gets a
scope of type ``mqtt``; :class:`kanal.consumers.MqttConsumer` is the consumer for it. This
package needs the ``mqtt`` extra (``pip install 'kanal[mqtt]'``, which brings aiomqtt).
"""

try:
    import aiomqtt  # noqa: F401
except ImportError as exc:  # pragma: no cover - tested in a subprocess without aiomqtt
    raise ImportError(
        "kanal.mqtt needs the 'mqtt' extra: pip install 'kanal[mqtt]' (it installs aiomqtt)"
    ) from exc

from kanal.exceptions import MqttError
from kanal.mqtt._config import MqttConfig
from kanal.mqtt._server import MqttServer, MqttStats

__all__ = ["MqttConfig", "MqttError", "MqttServer", "MqttStats"]
