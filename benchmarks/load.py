"""`python -m benchmarks.load` (`make load`): Locust, headless, against the real service.

Starts the service on a free loopback port (unless --host names a running one), runs Locust
with FastHttpUser users and no think time by default, writes CSV + HTML reports under
benchmarks/results/, stops the service, and prints the aggregate line. The exit code is
Locust's: non-zero when any request failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.ports import free_port
from benchmarks.server_process import Server, ServerError, python_module

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__)
    p.add_argument("--bundle", type=Path, default=Path("models/sentiment-3class"))
    p.add_argument("--data", type=Path, default=None, help="data folder; built-in sample if absent")
    p.add_argument("--host", default=None, help="target URL; default: start the service here")
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--spawn-rate", type=float, default=100.0, help="users started per second")
    p.add_argument("--run-time", default="60s", help="Locust duration, e.g. 30s, 2m")
    p.add_argument("--wait-min", type=float, default=0.0, help="think time minimum (s)")
    p.add_argument("--wait-max", type=float, default=0.0, help="think time maximum (s)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    p.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--api-key", default=None)
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--name", default=None, help="report file prefix (default <date>-<host>-locust)")
    args = p.parse_args(argv)
    if args.users < 1 or args.spawn_rate <= 0 or args.wait_max < 0 or args.wait_min < 0:
        p.error("--users >= 1, --spawn-rate > 0 and non-negative wait times are required")
    if any("=" not in item for item in args.service_env):
        p.error("--service-env expects KEY=VALUE")
    return args


def locust_command(args: argparse.Namespace, host: str, prefix: Path) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(args.users),
        "-r",
        str(args.spawn_rate),
        "-t",
        args.run_time,
        "--host",
        host,
        "--csv",
        str(prefix),
        "--html",
        str(prefix) + ".html",
        "--only-summary",
        "--stop-timeout",
        "5",
        "--wait-min",
        str(args.wait_min),
        "--wait-max",
        str(args.wait_max),
        "--request-timeout",
        str(args.timeout),
        "--summary-json",
        str(prefix) + "_summary.json",
    ]
    if args.data:
        cmd += ["--tweets-data", str(args.data)]
    if args.api_key:
        cmd += ["--api-key", args.api_key]
    return cmd


def summary(prefix: Path) -> dict[str, Any]:
    """The final totals the locustfile wrote on exit (requests, failures, RPS, percentiles)."""
    path = Path(str(prefix) + "_summary.json")
    return json.loads(path.read_text()) if path.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or f"{dt.datetime.now(dt.UTC):%Y-%m-%d}-{socket.gethostname()}-locust"
    prefix = args.out_dir / name
    server = None
    host = args.host
    if host is None:
        port = free_port()
        env = {
            "SENTIMENT_BUNDLE": str(args.bundle),
            "SENTIMENT_HOST": "127.0.0.1",
            "SENTIMENT_PORT": str(port),
            "SENTIMENT_ACCESS_LOG": "false",
            "SENTIMENT_LOG_LEVEL": "warning",
            **dict(item.split("=", 1) for item in args.service_env),
        }
        if args.api_key:
            env["SENTIMENT_API_KEY"] = args.api_key
        server = Server("service", python_module("service"), port, env)
        try:
            server.start()
        except ServerError as exc:
            print(f"service failed to start: {exc}", file=sys.stderr)
            return 2
        host = f"http://127.0.0.1:{port}"
    try:
        code = subprocess.run(locust_command(args, host, prefix), check=False).returncode
    finally:
        if server is not None:
            server.stop()
    row = summary(prefix)
    if row:
        print(
            f"locust: {row['requests']} requests, {row['failures']} failures, {row['rps']} RPS, "
            f"p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, p99 {row['p99_ms']} ms "
            f"({args.users} users, {args.run_time})"
        )
    else:
        print("locust wrote no summary (see its output above)", file=sys.stderr)
        code = code or 3
    print(f"reports: {prefix}_stats.csv, {prefix}.html, {prefix}_summary.json")
    return code


if __name__ == "__main__":
    sys.exit(main())
