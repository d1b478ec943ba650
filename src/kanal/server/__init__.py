"""kanal's ASGI interface server: HTTP/1.1 and WebSocket for any ASGI 3 application.

::

    from kanal.server import Config, Server, run

    server = Server(Config(app=app, port=0))
    await server.start()          # listening; server.port is the bound port
    await server.shutdown()       # graceful drain

    run(app, host="0.0.0.0", port=8000)   # blocking, stops on SIGTERM/SIGINT
"""

from kanal.server._config import Config, load_app
from kanal.server._run import run, run_config
from kanal.server._server import Server
from kanal.server._state import ServerStats

__all__ = ["Config", "Server", "ServerStats", "load_app", "run", "run_config"]
