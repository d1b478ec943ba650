"""Run kanal's benchmark suites: ``python -m bench [suite ...] [--repeats N]``.

A suite is any public module of this package that defines ``run(repeats: int) ->
list[Figure]`` (``layers_memory``, ``layers_redis``, ``server`` ...). With no names, every
suite runs, one after the other; each prints its table (medians, ratios kanal/peer) and JSON
lines as soon as it is done. A suite that fails is reported and the others still run; the
exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench._common import Figure, emit

Suite = Callable[[int], list[Figure]]


def discover() -> list[str]:
    """Every suite module's name in this package, in alphabetical order.

    A suite is a public module that defines a top-level ``run``; it is found by reading its
    source, not imported, so that listing needs none of the peers installed.
    """
    here = Path(__file__).parent
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(here)])
        if not info.name.startswith("_")
        and not info.ispkg
        and "\ndef run(" in (here / f"{info.name}.py").read_text()
    )


def load(name: str) -> Suite:
    """The ``run`` function of suite module ``name``, imported now.

    Suites are imported one at a time, when they are run: a suite whose peer is not
    installed (say, ``mqtt`` without the mqtt extra) fails on its own.
    """
    run: Suite = importlib.import_module(f"bench.{name}").run
    return run


def main(argv: list[str] | None = None) -> int:
    """Run the named suites (all by default); 0 if every one completed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="*", help="suite names (default: all); see --list")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per figure (default 3)")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    suites = discover()
    if args.list:
        print("\n".join(suites))
        return 0
    # "layers.memory" (the figures' suite name) is accepted for "layers_memory".
    wanted = [name.replace(".", "_") for name in args.suites] or list(suites)
    unknown = [name for name in wanted if name not in suites]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; available: {', '.join(suites)}")
    failed: list[str] = []
    for name in wanted:
        print(f"== bench {name} (repeats={args.repeats})", flush=True)
        started = time.monotonic()
        try:
            figures = load(name)(args.repeats)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        emit(figures)
        print(f"== bench {name}: {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        print(f"failed suites: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
