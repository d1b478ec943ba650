#!/usr/bin/env python3
"""Run Autobahn|Testsuite's fuzzing client against an echo app served by kanal (or a peer).

    python compliance/autobahn/run.py                      # kanal, sections 1-7, 9, 10
    python compliance/autobahn/run.py --server uvicorn     # the same against a peer
    python compliance/autobahn/run.py --cases 1,2,9.1.1    # sections or single cases
    python compliance/autobahn/run.py --compression        # add 12 and 13 (permessage-deflate)

It installs ``wstest`` into ``.wstest/`` when missing (``install-wstest`` beside this file),
starts the server on a free loopback port, runs the fuzzing client, then reads the report's
``index.json``: wstest always exits 0, so this script is what fails. Every case must end OK,
NON-STRICT or INFORMATIONAL. The HTML/JSON reports stay in
``compliance/autobahn/reports/<server>/``.

Exit status: 0 every case passed; 1 some case failed (listed, with what went wrong);
2 the server or wstest did not run; 3 wstest could not be installed because the Debian mirror
or PyPI was unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")
DEFAULT_SECTIONS = ("1", "2", "3", "4", "5", "6", "7", "9", "10")
COMPRESSION_SECTIONS = ("12", "13")
# --quick leaves out the cases with messages of 4 MiB and more (whole or in fragments of
# 64 B to 4 KiB): they take about 55 s of the 80 s of a full run, and the smaller cases of
# section 9 still exercise the same reassembly and echo paths.
LARGE_CASES = ("9.1.4", "9.1.5", "9.1.6", "9.2.4", "9.2.5", "9.2.6", "9.3.*", "9.4.*")
# Section 9 sends messages of up to 16 MiB (9.1.6, 9.2.6): the server's message limit must
# allow them, or it rightly closes with 1009 and the case fails.
MAX_MESSAGE = 16 * 1024 * 1024
APP = "echo_app:app"


def _kanal_executable() -> list[str]:
    script = Path(sys.executable).with_name("kanal")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from kanal.cli import main; sys.exit(main())"]


def server_command(server: str, port: int, compression: bool = False) -> list[str]:
    """The command line that serves the echo app on 127.0.0.1:``port`` with ``server``.

    ``compression``: enable permessage-deflate where it is off by default (kanal); uvicorn
    and Hypercorn accept it by default, Daphne does not implement it.
    """
    py = sys.executable
    if server == "kanal":
        return [
            *_kanal_executable(),
            "serve",
            APP,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ws-max-size",
            str(MAX_MESSAGE),
            "--log-level",
            "warning",
            *(["--ws-per-message-deflate"] if compression else []),
        ]
    if server == "uvicorn":
        return [
            py,
            "-m",
            "uvicorn",
            APP,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--ws",
            "websockets-sansio",
            "--ws-max-size",
            str(MAX_MESSAGE),
            "--log-level",
            "warning",
        ]
    if server == "hypercorn":
        return [
            py,
            "-m",
            "hypercorn",
            APP,
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "uvloop",
        ]
    if server == "daphne":
        return [py, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), APP]
    raise ValueError(f"unknown server {server!r}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until the server accepts connections on ``port``; False if it exited or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            # Not listening yet: the server is still importing. Retry shortly, bounded by the
            # deadline; there is no event to wait on for a process we do not control.
            time.sleep(0.05)
    return False


def case_patterns(cases: list[str]) -> list[str]:
    """wstest's patterns: a section "9" becomes "9.*"; a case id "9.1.1" stays exact.

    wstest matches a pattern with '*' as a regex anchored at the start only, so "1.*" (which
    becomes ``1\\..*``) does not match section 10.
    """
    return [c if c.count(".") >= 1 else f"{c}.*" for c in cases]


def _case_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


def summarize(outdir: Path) -> tuple[int, list[dict[str, Any]], dict[str, int]]:
    """(number of cases, failing cases with their report details, counts per behaviour)."""
    index = json.loads((outdir / "index.json").read_text())
    total = 0
    counts: dict[str, int] = {}
    failures: list[dict[str, Any]] = []
    for cases in index.values():
        for case_id in sorted(cases, key=_case_key):
            entry = cases[case_id]
            total += 1
            counts[entry["behavior"]] = counts.get(entry["behavior"], 0) + 1
            if entry["behavior"] in PASSING:
                continue
            detail: dict[str, Any] = {"id": case_id, **entry}
            report = outdir / entry.get("reportfile", "")
            if report.is_file():
                data = json.loads(report.read_text())
                for key in ("description", "expectation", "result", "resultClose"):
                    detail[key] = data.get(key)
            failures.append(detail)
    return total, failures, counts


def format_failure(f: dict[str, Any]) -> str:
    """A few lines naming the case and what went wrong, for a person reading the log."""

    def clean(text: Any) -> str:
        return " ".join(str(text or "").replace("<br>", " ").split())

    return "\n".join(
        [
            f"  {f['id']}: {f['behavior']} (close: {f.get('behaviorClose')})",
            f"    case:     {clean(f.get('description'))[:300]}",
            f"    expected: {clean(f.get('expectation'))[:300]}",
            f"    result:   {clean(f.get('result'))[:300]}",
            f"    close:    {clean(f.get('resultClose'))[:300]}",
        ]
    )


def install(wstest_dir: Path) -> int:
    """Install wstest into ``wstest_dir`` unless it is there; the installer's exit status."""
    return subprocess.call([str(HERE / "install-wstest"), str(wstest_dir)])


def run(args: argparse.Namespace) -> int:
    """Install if needed, serve, fuzz, judge; the process exit status (see the module doc)."""
    started = time.monotonic()
    wstest_dir = Path(args.wstest_dir).resolve()
    status = install(wstest_dir)
    if status != 0:
        print(f"autobahn: installing wstest failed (exit {status})", file=sys.stderr)
        return 3 if status == 3 else 2
    installed = time.monotonic()

    outdir = Path(args.reports).resolve() / args.server
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    cases: list[str] = args.cases.split(",") if args.cases else list(DEFAULT_SECTIONS)
    if args.compression and not args.cases:
        cases += list(COMPRESSION_SECTIONS)
    excluded: list[str] = args.exclude.split(",") if args.exclude else []
    if args.quick:
        excluded += LARGE_CASES
    port = free_port()
    spec: dict[str, Any] = {
        "outdir": str(outdir),
        "servers": [{"agent": args.server, "url": f"ws://127.0.0.1:{port}"}],
        "cases": case_patterns(cases),
        "exclude-cases": excluded,
        "exclude-agent-cases": {},
    }
    spec_path = outdir / "fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=2))

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    command = server_command(args.server, port, args.compression) + list(args.server_arg)
    server_log = (outdir / "server.log").open("wb")
    server = subprocess.Popen(
        command,
        cwd=HERE,
        env=env,
        stdout=server_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        if not wait_listening(port, server, timeout=30):
            print(f"autobahn: {args.server} did not start: {' '.join(command)}", file=sys.stderr)
            server_log.flush()
            print((outdir / "server.log").read_text(errors="replace")[-3000:], file=sys.stderr)
            return 2
        print(
            f"autobahn: fuzzing {args.server} on port {port}, cases {','.join(cases)}"
            + (f" except {','.join(excluded)}" if excluded else "")
        )
        with (outdir / "wstest.log").open("wb") as wstest_log:
            wstest = subprocess.Popen(
                [str(wstest_dir / "wstest"), "-m", "fuzzingclient", "-s", str(spec_path)],
                cwd=outdir,
                stdout=wstest_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code = wstest.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"autobahn: wstest took longer than {args.timeout} s", file=sys.stderr)
                return 2
            finally:
                stop(wstest)
        if code != 0 or not (outdir / "index.json").is_file():
            print(f"autobahn: wstest failed (exit {code}); see {outdir / 'wstest.log'}")
            return 2
    finally:
        stop(server)
        server_log.close()

    total, failures, counts = summarize(outdir)
    elapsed = time.monotonic() - started
    print(
        f"autobahn: {args.server}: {total} cases, {counts}; "
        f"{elapsed:.0f} s ({installed - started:.0f} s installing); report {outdir}/index.html"
    )
    if total == 0:
        print("autobahn: no case ran", file=sys.stderr)
        return 2
    if failures:
        print(
            f"autobahn: {len(failures)} case(s) not passed: {' '.join(f['id'] for f in failures)}"
        )
        for f in failures:
            print(format_failure(f))
        return 1
    return 0


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group (its own session), then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the suite; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", default="kanal", choices=["kanal", "uvicorn", "hypercorn", "daphne"]
    )
    parser.add_argument("--cases", help="comma-separated sections or case ids (default 1-7,9,10)")
    parser.add_argument(
        "--compression",
        action="store_true",
        help="enable permessage-deflate on the server; without --cases, also run 12 and 13",
    )
    parser.add_argument("--exclude", help="comma-separated case ids or patterns to leave out")
    parser.add_argument(
        "--quick", action="store_true", help="leave out the slow cases with messages >= 4 MiB"
    )
    parser.add_argument("--wstest-dir", default=str(ROOT / ".wstest"))
    parser.add_argument("--reports", default=str(HERE / "reports"))
    parser.add_argument("--timeout", type=float, default=1200, help="seconds wstest may take")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra argument for the server (repeat)"
    )
    args = parser.parse_args(argv)
    # SIGTERM (from `timeout`, CI, a process manager) unwinds like Ctrl-C, so the server and
    # wstest, each in its own session, are stopped by the `finally` blocks, not orphaned.
    signal.signal(signal.SIGTERM, _terminate)
    return run(args)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
