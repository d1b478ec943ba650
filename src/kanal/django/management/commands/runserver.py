"""``manage.py runserver``: Django's development server, served by kanal (HTTP and WebSocket).

Django's own command does the rest: the autoreloader (a change restarts the process), the
system checks, the migrations warning, the address parsing. Static files are served in
``DEBUG`` (or with ``--insecure``) as Django's staticfiles ``runserver`` serves them.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.management.commands.runserver import Command as RunserverCommand

from kanal import __version__
from kanal.django._application import get_default_application
from kanal.typing import ASGIApp

logger = logging.getLogger("kanal.django")


class Command(RunserverCommand):
    """Django's ``runserver`` with kanal's ASGI server in place of the WSGI one."""

    help = "Starts kanal's development server (HTTP and WebSocket) for this project."

    def add_arguments(self, parser: Any) -> None:
        """Django's options, plus staticfiles' ``--nostatic`` and ``--insecure``."""
        super().add_arguments(parser)
        if apps.is_installed("django.contrib.staticfiles"):
            parser.add_argument(
                "--nostatic",
                action="store_false",
                dest="use_static_handler",
                help="Do not serve static files at STATIC_URL.",
            )
            parser.add_argument(
                "--insecure",
                action="store_true",
                dest="insecure_serving",
                help="Serve static files even if DEBUG is False.",
            )

    def get_application(self, options: dict[str, Any]) -> ASGIApp:
        """``ASGI_APPLICATION``, behind Django's static files handler when it should serve."""
        application = get_default_application()
        use_static = options.get(
            "use_static_handler", apps.is_installed("django.contrib.staticfiles")
        )
        if use_static and (settings.DEBUG or options.get("insecure_serving")):
            from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

            handler: ASGIApp = ASGIStaticFilesHandler(application)
            return handler
        return application

    def inner_run(self, *args: Any, **options: Any) -> None:
        """Check, print the banner, serve until Control-C (or the reloader's restart)."""
        from kanal.server import Config, Server

        self.stdout.write("Performing system checks...\n\n")
        self.check(display_num_errors=True)
        self.check_migrations()
        now = datetime.datetime.now().strftime("%B %d, %Y - %X")
        address = f"[{self.addr}]" if self._raw_ipv6 else self.addr
        self.stdout.write(
            f"{now}\nDjango version {self.get_version()}, using settings "
            f"{settings.SETTINGS_MODULE!r}\nStarting kanal {__version__} development server "
            f"at http://{address}:{self.port}/\nQuit the server with CONTROL-C.\n"
        )
        # The server's own log lines (one per request) go where Django's runserver puts its.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%d/%b/%Y %H:%M:%S"))
        kanal_logger = logging.getLogger("kanal")
        if not kanal_logger.handlers:
            kanal_logger.addHandler(handler)
            kanal_logger.setLevel(logging.INFO)
        config = Config(
            app=self.get_application(options),
            host=self.addr,
            port=int(self.port),
            root_path=getattr(settings, "FORCE_SCRIPT_NAME", "") or "",
            access_log=True,
            # Quick restarts: the reloader stops this process on every code change.
            timeout_graceful_shutdown=2.0,
        )
        try:
            # Under the autoreloader this runs in a thread: the server then installs no
            # signal handlers, and the reloader ends the whole process on a change.
            asyncio.run(Server(config).serve())
        except KeyboardInterrupt:
            shutdown_message = options.get("shutdown_message", "")
            if shutdown_message:
                self.stdout.write(shutdown_message)
