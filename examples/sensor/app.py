"""The sensor example's application: the page over HTTP, tabs over WebSocket, the broker over MQTT.

``kanal serve examples.sensor.app:application`` serves the page and the WebSockets;
``kanal mqtt examples.sensor.app:application --broker mqtt://...`` runs the MQTT side; with a
shared layer (``KANAL_LAYER=redis://...``) they may be separate processes, or one process as
in ``python -m examples.sensor``.
"""

from __future__ import annotations

from kanal.middleware import AllowedOriginsMiddleware
from kanal.routing import ProtocolTypeRouter, URLRouter, path

from .consumers import Dashboard, Page, SensorBridge

application = ProtocolTypeRouter(
    {
        "http": URLRouter([path("", Page.as_asgi())]),
        "websocket": AllowedOriginsMiddleware(
            URLRouter([path("ws/sensors/", Dashboard.as_asgi())]),
            ["http://127.0.0.1:*", "http://localhost:*"],
        ),
        "mqtt": SensorBridge.as_asgi(),
    }
)
