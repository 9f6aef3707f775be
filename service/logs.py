"""One logging setup for the service and uvicorn: one JSON object per line on stderr.

`logging_config(level)` is handed to uvicorn as its `log_config`, so every worker process
configures the same way. Extra fields passed with `extra={...}` become JSON keys.

Nothing is written on the event loop: a record goes to a bounded in-memory queue and one
writer thread formats and writes it (`QueueStderrHandler`), so a slow or blocked stderr (a
full pipe, a stalled log collector) cannot stall request handling. When the queue is full the
record is dropped and counted (`dropped`), rather than blocking or growing memory. The writer
wakes once per burst, not once per line (`FLUSH_S`): handing every access-log line to it on
its own cost throughput at 500 users (measured side by side: reports/experiments.md).

The access log, one line per request, skips the `logging` record machinery when that changes
nothing: where its logger's lines would reach this one handler and nothing else,
`access_writer` hands the app a function that queues a bare `AccessEntry` (a tuple), and the
writer formats it into the same JSON line a LogRecord would have become. A LogRecord costs
the event loop a stack walk for the caller, a lock and a dozen attributes per request.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

QUEUE_RECORDS = 10_000
ACCESS_LOGGER = "service.access"
FLUSH_S = 0.05  # a woken writer gathers what arrives this long, then formats and writes it at once

# Attributes every LogRecord has; anything else came from `extra=` and is emitted.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}


def line_head(created: float, msecs: int, level: str, logger: str, msg: str) -> dict[str, Any]:
    """The keys every line starts with, in order (`created`: seconds since the epoch)."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return {"ts": f"{ts}.{msecs:03d}Z", "level": level, "logger": logger, "msg": msg}


class JsonFormatter(logging.Formatter):
    """`{"ts": ..., "level": ..., "logger": ..., "msg": ..., <extra>...}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry = line_head(
            record.created, int(record.msecs), record.levelname.lower(), record.name,
            record.getMessage(),
        )  # fmt: skip
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class AccessEntry(NamedTuple):
    """One access-log line's fields (message "request", level info, logger service.access)."""

    created: float  # time.time()
    method: str
    path: str
    status: int
    ms: float
    client: str | None

    def json(self) -> str:
        """The line JsonFormatter writes for the equivalent LogRecord."""
        msecs = int(self.created % 1 * 1000)
        entry = line_head(self.created, msecs, "info", ACCESS_LOGGER, "request") | {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "ms": self.ms,
            "client": self.client,
        }
        return json.dumps(entry, ensure_ascii=False, default=str)


def access_writer(logger: logging.Logger) -> Callable[[AccessEntry], None] | None:
    """A cheaper way to write `logger`'s INFO lines, if they would reach exactly one
    QueueStderrHandler and no filter (as `logging_config` sets it up); None otherwise (tests
    capturing records, a user's own logging setup): then the app logs through `logging`."""
    if not logger.isEnabledFor(logging.INFO):
        return None
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        handlers += current.handlers
        current = current.parent if current.propagate else None
    if len(handlers) != 1 or not isinstance(handlers[0], QueueStderrHandler):
        return None
    handler = handlers[0]
    if handler.filters or handler.level > logging.INFO:
        return None
    return handler.enqueue


class QueueStderrHandler(logging.handlers.QueueHandler):
    """Enqueue on the caller's thread; format and write JSON lines on one writer thread, a
    burst at a time (formatting on the event loop instead measured slower at 500 users).

    The queue is a `SimpleQueue`, whose put is reentrant: a signal handler that logs while the
    main thread is inside `put` cannot deadlock it (a `queue.Queue`'s lock would). Its bound is
    kept by checking the size first (approximate under races, which is all a bound needs).
    """

    queue: queue.SimpleQueue[Any]

    def __init__(self, maxsize: int = QUEUE_RECORDS) -> None:
        super().__init__(queue.SimpleQueue())
        self.maxsize = maxsize
        self.dropped = 0
        self.writer = logging.StreamHandler(sys.stderr)
        self.writer.setFormatter(JsonFormatter())
        self._thread: threading.Thread | None = threading.Thread(
            target=self._write_bursts, name="log-writer", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # same process: the writer thread formats it (message, traceback)

    def enqueue(self, record: logging.LogRecord | AccessEntry) -> None:
        if self.queue.qsize() >= self.maxsize:
            self.dropped += 1
            return
        self.queue.put(record)

    def _write_bursts(self) -> None:
        """Wait for a record, let the burst it starts arrive, write the burst in one call;
        until the sentinel (None) from `close`."""
        while True:
            burst = [self.queue.get()]
            if burst[0] is not None:
                time.sleep(FLUSH_S)
            for _ in range(self.queue.qsize()):  # what is there now: a bounded drain
                burst.append(self.queue.get_nowait())
            self._write([record for record in burst if record is not None])
            if None in burst:
                return

    def _write(self, records: list[logging.LogRecord | AccessEntry]) -> None:
        lines = []
        for record in records:
            try:
                if isinstance(record, AccessEntry):
                    lines.append(record.json() + "\n")
                else:
                    lines.append(self.writer.format(record) + "\n")
            except Exception:
                self.writer.handleError(_as_record(record))  # logging's policy: report, go on
        if lines:
            try:
                self.writer.stream.write("".join(lines))
                self.writer.flush()
            except Exception:
                self.writer.handleError(_as_record(records[-1]))

    def close(self) -> None:
        """Write what is queued, then stop the writer (idempotent; bounded if stderr hangs)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self.queue.put(None)
            thread.join(timeout=5)
        super().close()


def _as_record(record: logging.LogRecord | AccessEntry) -> logging.LogRecord:
    if isinstance(record, AccessEntry):
        return logging.makeLogRecord({"name": ACCESS_LOGGER, "msg": "request"})
    return record


class DropServerDuplicate(logging.Filter):
    """uvicorn logs every exception that reaches it ("Exception in ASGI application"); the
    app's 500 handler has already logged it with the request: keep one of the two."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Exception in ASGI application")


def logging_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: JSON lines to stderr at `level` for all loggers."""
    upper = level.upper()
    handler = {"handlers": ["stderr"], "level": upper, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"one_500": {"()": "service.logs.DropServerDuplicate"}},
        "handlers": {"stderr": {"()": "service.logs.QueueStderrHandler"}},
        "loggers": {
            "service": handler,
            "uvicorn": handler,
            "uvicorn.error": {"level": upper, "filters": ["one_500"]},
            "uvicorn.access": {**handler, "level": "WARNING"},  # the service logs requests
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
