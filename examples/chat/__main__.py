"""``python -m examples.chat [--host H] [--port P]``: serve the chat and print its URL."""

from __future__ import annotations

import argparse
import os

from kanal.server import run

from .app import application


def main() -> None:
    """Parse the two options, print where to go, and serve until Ctrl+C."""
    parser = argparse.ArgumentParser(description="kanal's chat example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    layer = os.environ.get("KANAL_LAYER") or "memory://"
    print(
        f"kanal chat: open http://{args.host}:{args.port}/  (layer {layer}; Ctrl+C stops)",
        flush=True,
    )
    run(application, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
