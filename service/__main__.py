"""`python -m service [--workers N] [--host H] [--port P]`: the one way to start the service.

Reads `Settings` from `SENTIMENT_*` variables (flags override them), checks every bundle before
binding the port (exit 2 with a clear message if one is missing or altered, or two share a
name), then runs uvicorn
with uvloop and httptools. SIGTERM: /ready turns 503, the listener closes after
SENTIMENT_DRAIN_DELAY_S, every accepted request is answered, then the process exits 0.
SIGHUP: every worker reloads its bundles in place (service/reload.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import logging.config
import math
import os
import shutil
import signal
import sys
import tempfile
from types import FrameType
from typing import Any

import uvicorn

from service.bundle import BundleError
from service.lifecycle import HangupLatch
from service.logs import logging_config
from service.metrics import MULTIPROC_ENV
from service.registry import load_bundles
from service.settings import PREFIX, Settings, SettingsError
from service.workers import ReloadingMultiprocess

log = logging.getLogger("service")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--workers", type=int, help="worker processes (SENTIMENT_WORKERS)")
    parser.add_argument("--host", help="bind address (SENTIMENT_HOST)")
    parser.add_argument("--port", type=int, help="bind port (SENTIMENT_PORT)")
    return parser.parse_args(argv)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises the signal after its graceful shutdown; finishing that is a success.
    raise SystemExit(0)


def _http_protocol(settings: Settings) -> Any:
    """httptools with a header timeout (service/protocol.py); h11 where httptools is missing."""
    if importlib.util.find_spec("httptools") is None:
        return "h11"
    from service.protocol import header_timeout_protocol

    return header_timeout_protocol(settings.header_timeout_s)


def main(argv: list[str] | None = None) -> int:
    # A reload asked for before the models serve happens once they do (the lifespan reads
    # the latch): SIGHUP's default action would end the process.
    signal.signal(signal.SIGHUP, HangupLatch())
    args = _parse_args(argv)
    for name in ("workers", "host", "port"):  # via the environment: worker processes read it too
        if getattr(args, name) is not None:
            os.environ[PREFIX + name.upper()] = str(getattr(args, name))
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        logging.config.dictConfig(logging_config("info"))
        log.critical("refusing to start: %s", exc)
        return 2
    logging.config.dictConfig(logging_config(settings.log_level))
    for name in Settings.unknown_variables():
        log.warning("ignoring unknown variable %s (not a setting: typo?)", name)
    try:  # fail fast, before uvicorn binds or forks: exit 2 naming the altered file
        bundles = load_bundles(settings.bundles)
    except BundleError as exc:
        log.critical("refusing to start: %s", exc)
        return 2

    metrics_dir = None
    if settings.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="sentiment-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    multi = settings.workers > 1
    if multi:  # each worker process builds its own app (and session) from the environment
        target: Any = "service.app:app_from_env"
    else:
        from service.app import create_app

        target = create_app(settings, bundles)
    config = uvicorn.Config(
        target,
        factory=multi,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=_http_protocol(settings),
        ws="none",
        lifespan="on",
        log_config=logging_config(settings.log_level),
        access_log=False,
        server_header=False,
        timeout_keep_alive=settings.keepalive_s,
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
    )
    try:
        if multi:
            ReloadingMultiprocess(config, sockets=[config.bind_socket()]).run()
            return 0
        server = uvicorn.Server(config)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _exit_cleanly)
        server.run()
        return 0 if server.started else 3
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
