"""``kanal serve kanal.bridge.asgi:application``: the server side of the decoupled mode.

The application forwards every connection to workers (``kanal worker --bridge module:app``)
through the channel layer named by ``KANAL_LAYER``. ``kanal serve --bridge`` serves it.
"""

from kanal.bridge._server import BridgeApp

__all__ = ["application"]

#: The bridge as an ASGI application, on the default channel layer.
application = BridgeApp()
