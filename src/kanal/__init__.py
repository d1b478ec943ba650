"""kanal: channels for Python.

A channel layer joining interface servers, consumers and workers; an ASGI server for HTTP and
WebSockets; and the framework to write consumers in.
"""

from kanal.exceptions import KanalError

__version__ = "0.1.0.dev0"

__all__ = ["KanalError", "__version__"]
