"""``manage.py runworker CHANNEL...``: run the project's consumers for named channels."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.core.management import BaseCommand, CommandError

from kanal.django._application import get_default_application
from kanal.django._layers import DEFAULT_CHANNEL_LAYER, channel_layers, default_layer
from kanal.exceptions import ConfigError

logger = logging.getLogger("kanal.django")


class Command(BaseCommand):
    """Channels' ``runworker``, on :class:`kanal.worker.Worker`."""

    help = "Runs a kanal worker: the ASGI_APPLICATION's consumers for the named channels."
    leave_locale_alone = True

    def add_arguments(self, parser: Any) -> None:
        """``--layer ALIAS`` (``default``), ``--concurrency N``, and the channel names."""
        super().add_arguments(parser)
        parser.add_argument(
            "--layer",
            default=DEFAULT_CHANNEL_LAYER,
            help="the CHANNEL_LAYERS alias to use (default: default)",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=1,
            help="application instances per channel (default 1)",
        )
        parser.add_argument("channels", nargs="+", help="channels to receive from")

    def handle(self, *args: Any, **options: Any) -> None:
        """Serve until SIGTERM or SIGINT, finishing the messages in hand."""
        from kanal.worker import Worker

        alias = options["layer"]
        if alias in channel_layers:
            layer = channel_layers[alias]
        elif alias == DEFAULT_CHANNEL_LAYER:
            layer = default_layer()  # no CHANNEL_LAYERS: KANAL_LAYER, as `kanal worker`
        else:
            raise CommandError(f"no channel layer {alias!r} in CHANNEL_LAYERS")
        try:
            worker = Worker(
                get_default_application(),
                options["channels"],
                layer=layer,
                concurrency=options["concurrency"],
            )
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        if int(options.get("verbosity", 1)) >= 1 and not logging.getLogger("kanal").handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        logger.info("running a worker for %s", ", ".join(options["channels"]))

        async def run() -> None:
            try:
                await worker.serve()
            finally:
                await layer.close()

        asyncio.run(run())
