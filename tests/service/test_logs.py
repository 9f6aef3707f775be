"""The service's logging: JSON lines written off the caller's thread, never blocking it."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import threading
import time

import pytest

from service import logs


class StuckStream(io.StringIO):
    """A stderr whose writes block until released (a full pipe, a stalled collector)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(10)
        return super().write(text)


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> tuple[logs.QueueStderrHandler, StuckStream]:
    stream = StuckStream()
    monkeypatch.setattr(logs.sys, "stderr", stream)
    made = logs.QueueStderrHandler(maxsize=5)
    yield made, stream
    stream.release.set()
    made.close()


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("service", logging.INFO, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    return made


def test_a_blocked_stderr_never_blocks_the_caller(handler) -> None:  # type: ignore[no-untyped-def]
    made, stream = handler
    start = time.perf_counter()
    for i in range(100):  # far more than the queue holds, with the writer stuck
        made.handle(record(f"line {i}"))
    assert time.perf_counter() - start < 0.5
    assert made.dropped >= 100 - 5 - 6  # the queue, and the burst the writer holds (<= 1 + 5)
    stream.release.set()
    made.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines and all(line["msg"].startswith("line ") for line in lines)
    assert len(lines) == 100 - made.dropped


def test_records_become_json_lines_with_their_extra_fields(handler) -> None:  # type: ignore[no-untyped-def]
    made, stream = handler
    stream.release.set()
    made.handle(record("ready", model="sentiment-binary", rows=3))
    made.close()
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["msg"] == "ready" and line["model"] == "sentiment-binary" and line["rows"] == 3
    assert line["level"] == "info" and line["logger"] == "service"


def test_a_burst_is_written_at_once_and_close_writes_what_is_queued(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    writes: list[str] = []
    burst_written = threading.Event()

    class Recorder(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            if sum(part.count("\n") for part in writes) >= 50:
                burst_written.set()
            return len(text)

    monkeypatch.setattr(logs.sys, "stderr", Recorder())
    made = logs.QueueStderrHandler()
    for i in range(50):
        made.handle(record(f"line {i}"))
    assert burst_written.wait(5), f"{len(writes)} writes, the burst not all written"
    assert len(writes) <= 2  # one wake-up per burst, not per line (the first may go alone)
    made.handle(record("last"))
    made.close()  # before the writer's pause ends: the record is still written
    lines = [json.loads(line)["msg"] for text in writes for line in text.splitlines()]
    assert lines == [f"line {i}" for i in range(50)] + ["last"]


def test_uvicorn_duplicate_of_a_logged_500_is_filtered() -> None:
    keep = logs.DropServerDuplicate()
    assert not keep.filter(record("Exception in ASGI application\n"))
    assert keep.filter(record("Started server process [%d]"))


def test_an_access_entry_is_the_line_its_log_record_would_be() -> None:
    entry = logs.AccessEntry(1764650000.0421, "POST", '/predict"x', 200, 3.21, "127.0.0.1")
    made = logging.LogRecord(logs.ACCESS_LOGGER, logging.INFO, __file__, 1, "request", None, None)
    made.created, made.msecs = entry.created, (entry.created % 1) * 1000
    fields = entry._asdict()
    del fields["created"]
    made.__dict__.update(fields)
    assert json.loads(entry.json()) == json.loads(logs.JsonFormatter().format(made))
    assert entry.json() == logs.JsonFormatter().format(made)  # same keys, same order


def test_the_access_log_skips_log_records_only_where_nothing_else_would_see_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs.sys, "stderr", io.StringIO())
    names = ("service", "service.access", "uvicorn", "uvicorn.error", "uvicorn.access", "")
    saved = {n: dict(vars(logging.getLogger(n))) for n in names}
    for state in saved.values():  # dictConfig empties these lists in place
        state["handlers"], state["filters"] = list(state["handlers"]), list(state["filters"])
    try:
        logging.config.dictConfig(logs.logging_config("info"))
        access = logging.getLogger(logs.ACCESS_LOGGER)
        writer = logs.access_writer(access)
        (handler,) = logging.getLogger("service").handlers
        assert isinstance(handler, logs.QueueStderrHandler) and writer == handler.enqueue
        access.addFilter(logging.Filter("elsewhere"))  # a filter must see every record
        assert logs.access_writer(access) is None
        access.filters.clear()
        logging.getLogger("service").addHandler(logging.NullHandler())  # a second reader
        assert logs.access_writer(access) is None
        logging.config.dictConfig(logs.logging_config("warning"))  # INFO lines are off
        assert logs.access_writer(access) is None
    finally:
        for name, state in saved.items():
            logger = logging.getLogger(name)
            for made in logger.handlers:
                if made not in state["handlers"]:
                    made.close()
            vars(logger).update(state)
