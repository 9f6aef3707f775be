"""Issue #23's stages: py-spy stacks mapped to the request path's stages, and the per-request
arithmetic, on stacks written by hand in py-spy's raw format (no profiler, no timing)."""

import os
import time
from pathlib import Path

import psutil
import pytest

from benchmarks import proctimes, pyspy, stages

PROCESS = 'process 7:"python -m service"'
MAIN = [
    "_run_module_as_main (<frozen runpy>:198)",
    "<module> (service/__main__.py:122)",
    "main (service/__main__.py:114)",
    "Server.run (uvicorn/server.py:86)",
    "asyncio_run (uvicorn/_compat.py:30)",
    "Runner.run (asyncio/runners.py:118)",
]
OBSERVE = "ObserveMiddleware.__call__ (service/asgi.py:87)"
ROUTE = "PredictFirst.__call__ (service/asgi.py:52)"  # POST /predict, straight to its handler
APP = [
    *MAIN,
    "RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:422)",
    "ProxyHeadersMiddleware.__call__ (uvicorn/middleware/proxy_headers.py:63)",
    "Starlette.__call__ (starlette/applications.py:96)",
    OBSERVE,
    ROUTE,
]
OTHER_ROUTE = [  # any other request: Starlette's own stack under PredictFirst
    *APP,
    "ServerErrorMiddleware.__call__ (starlette/middleware/errors.py:164)",
    "ExceptionMiddleware.__call__ (starlette/middleware/exceptions.py:63)",
    "Router.__call__ (starlette/routing.py:683)",
]
PREDICT = [*APP, "Handlers.predict (service/app.py:209)"]
WORKER = [
    "Thread._bootstrap (threading.py:1002)",
    "Thread._bootstrap_inner (threading.py:1045)",
    "Thread.run (threading.py:982)",
    "_worker (concurrent/futures/thread.py:83)",
]
RUN = [
    *WORKER,
    "_WorkItem.run (concurrent/futures/thread.py:58)",
    "Scheduler._execute (service/scheduler.py:206)",
    "Scheduler._run_rows (service/scheduler.py:251)",
    "Scheduler._timed_infer (service/scheduler.py:267)",
]
SEND = [
    *APP,
    "Response.__call__ (starlette/responses.py:174)",
    "ObserveMiddleware.__call__.<locals>.send_observed (service/asgi.py:82)",
    "RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:551)",
]
LOG_THREAD = [
    "Thread._bootstrap (threading.py:1002)",
    "Thread.run (threading.py:982)",
    "QueueStderrHandler._write_bursts (service/logs.py:98)",
]

CASES = {
    "data_received": (
        [*MAIN, "HttpToolsProtocol.data_received (uvicorn/protocols/http/httptools_impl.py:174)"],
        stages.ACCEPT,
    ),
    "header timer": (
        [*MAIN, "HeaderTimeoutProtocol.on_headers_complete (service/protocol.py:120)"],
        stages.ACCEPT,
    ),
    "router": ([*OTHER_ROUTE, "Route.matches (starlette/routing.py:255)"], stages.ROUTING),
    "the direct route's own lines": (APP, stages.ROUTING),
    "send_observed's own lines": (SEND[:-1], stages.RESPONSE),
    "schema": ([*PREDICT, "Schema.parse (service/schema.py:218)"], stages.VALIDATION),
    "predict's own lines": (PREDICT, stages.VALIDATION),
    "read_body's timeout (asyncio under a stage)": (
        [*PREDICT, "read_body (service/payload.py:47)", "timeout (asyncio/timeouts.py:146)"],
        stages.VALIDATION,
    ),
    "tokenizer": (
        [*PREDICT, "_encode (service/app.py:257)", "Engine.encode (service/engine.py:197)"],
        stages.TOKENISATION,
    ),
    "a comprehension in encode": (
        [*PREDICT, "Engine.encode.<locals>.<listcomp> (service/engine.py:206)"],
        stages.TOKENISATION,
    ),
    "older py-spy frames (no class)": (["encode (service/engine.py:80)"], stages.TOKENISATION),
    "submit to the pool": (
        [
            *PREDICT,
            "_infer (service/app.py:267)",
            "Scheduler.predict (service/scheduler.py:173)",
            "ThreadPoolExecutor.submit (concurrent/futures/thread.py:172)",
        ],
        stages.SCHEDULING,
    ),
    "asyncio Event under the scheduler": (
        [
            *PREDICT,
            "Scheduler.predict (service/scheduler.py:165)",
            "Event.clear (asyncio/locks.py:1)",
        ],
        stages.SCHEDULING,
    ),
    "a worker waking up": (WORKER, stages.SCHEDULING),
    "session.run": (
        [
            *RUN,
            "Engine.infer (service/engine.py:210)",
            "Engine._run (service/engine.py:228)",
            "Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:326)",
        ],
        stages.INFERENCE,
    ),
    "padding and softmax": (
        [*RUN, "Engine.infer (service/engine.py:210)", "Engine._run (service/engine.py:231)"],
        stages.GLUE,
    ),
    "batch metrics on the worker": (
        [
            *RUN,
            "ModelMetrics.batch (service/metrics.py:200)",
            "MutexValue.inc (prometheus_client/values.py:20)",
            "Lock.__enter__ (threading.py:1)",
        ],
        stages.METRICS,
    ),
    "the middleware's own lines": (APP[: APP.index(OBSERVE) + 1], stages.METRICS),
    "the middleware's counter": (
        [*APP[: APP.index(OBSERVE) + 1], "ObserveMiddleware._count (service/asgi.py:104)"],
        stages.METRICS,
    ),
    "the middleware's access-log line": (
        [*APP[: APP.index(OBSERVE) + 1], "ObserveMiddleware._log (service/asgi.py:113)"],
        stages.ACCESS_LOG,
    ),
    "logging under the middleware": (
        [
            *APP[: APP.index(OBSERVE) + 1],
            "Logger.info (logging/__init__.py:1489)",
            "LogRecord.__init__ (logging/__init__.py:300)",
            "current_thread (threading.py:1453)",
        ],
        stages.ACCESS_LOG,
    ),
    "json in the log writer": (
        [
            *LOG_THREAD,
            "JsonFormatter.format (service/logs.py:54)",
            "dumps (json/__init__.py:238)",
            "JSONEncoder.iterencode (json/encoder.py:258)",
        ],
        stages.ACCESS_LOG,
    ),
    "json in the response": (
        [*PREDICT, "_json (service/app.py:143)", "dumps (json/__init__.py:238)"],
        stages.RESPONSE,
    ),
    "render": ([*PREDICT, "render (service/payload.py:79)"], stages.RESPONSE),
    "a truncated stack (nonblocking read)": (["render (service/payload.py:79)"], stages.RESPONSE),
    "uvicorn send": (SEND, stages.RESPONSE),
    "the one-send transport": (
        [*SEND, "CoalescingTransport.write (service/protocol.py:48)"],
        stages.RESPONSE,
    ),
    "the loop itself": (MAIN, stages.EVENT_LOOP),
    "no Python frames": ([], stages.OTHER),
    "a thread waiting": ([*WORKER[:3], "Condition.wait (threading.py:320)"], stages.SCHEDULING),
    "unknown code in a thread": ([*WORKER[:3], "f (somewhere/else.py:1)"], stages.OTHER),
    "unknown code on the loop": ([*MAIN, "f (somewhere/else.py:1)"], stages.OTHER),
}


@pytest.mark.parametrize("stack, expected", CASES.values(), ids=CASES.keys())
def test_a_sample_belongs_to_the_innermost_frame_that_names_a_stage(
    stack: list[str], expected: str
) -> None:
    assert stages.stage(stack) == expected


def test_raw_lines_are_counted_by_stage(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        f"{PROCESS};{';'.join(SEND)} 5\n"
        f"{PROCESS};{';'.join(MAIN)} 3\n"
        f"{PROCESS};{';'.join([*PREDICT, 'Schema.parse (service/schema.py:218)'])} 2\n"
        f"{PROCESS} 1\n"
        "garbage line without a count\n"
    )
    first, *_ = pyspy.stacks(raw)
    assert first == (SEND, 5)  # frames outermost first, without the process entry
    assert stages.count(pyspy.stacks(raw)) == {
        stages.RESPONSE: 5,
        stages.EVENT_LOOP: 3,
        stages.VALIDATION: 2,
        stages.OTHER: 1,
    }


def test_core_time_per_request_is_samples_over_rate_over_requests() -> None:
    samples = {stages.INFERENCE: 600, stages.ROUTING: 50, stages.RESPONSE: 30, stages.OTHER: 20}
    out = stages.per_request(samples, rate=100, seconds=2, rps=250.0)
    assert out["requests"] == 500.0
    by_stage = {row["stage"]: row for row in out["stages"]}
    assert list(by_stage) == list(stages.STAGES)  # every stage, in the path's order
    assert by_stage[stages.ROUTING] == {"stage": stages.ROUTING, "samples": 50, "us": 1000.0}
    assert by_stage[stages.RESPONSE]["us"] == 600.0  # 30 / 100 Hz = 0.3 s over 500 requests
    assert by_stage[stages.VALIDATION] == {"stage": stages.VALIDATION, "samples": 0, "us": 0.0}
    assert out["outside_inference"] == {"samples": 100, "us": 2000.0}
    assert out["inference"] == {"samples": 600, "us": 12000.0}
    assert stages.per_request(samples, 100, 2, 0.0)["outside_inference"]["us"] is None


def test_the_os_cross_check_is_per_request_answered() -> None:
    assert stages.cross_check(0.5, 0.1, 1000, 0.2) == {
        "cpu_us": 500.0, "loop_cpu_us": 200.0, "run_queue_us": 100.0,
    }  # fmt: skip
    assert stages.cross_check(0.5, None, 1000) == {
        "cpu_us": 500.0, "loop_cpu_us": None, "run_queue_us": None,
    }  # fmt: skip
    nothing = {"cpu_us": None, "loop_cpu_us": None, "run_queue_us": None}
    assert stages.cross_check(0.5, 0.1, 0, 0.2) == nothing


def test_a_window_reads_this_process_cpu_and_run_queue() -> None:
    window = proctimes.Window()
    window.open(os.getpid())
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    window.close()
    assert window.processes == [psutil.Process()]
    assert 0.05 <= window.cpu_s < 5  # psutil counts in clock ticks (10 ms): leave them room
    assert 0.05 <= window.loop_cpu_s <= window.cpu_s + 0.02  # the busy thread is the main one
    if Path("/proc/self/schedstat").is_file():
        assert window.run_queue_s is not None and window.run_queue_s >= 0


def test_run_queue_seconds_read_schedstat_of_every_thread(tmp_path: Path) -> None:
    me = psutil.Process()
    for tid, line in (("1", "900 2000000000 5"), ("2", "100 500000000 3")):
        task = tmp_path / str(me.pid) / "task" / tid
        task.mkdir(parents=True)
        (task / "schedstat").write_text(line + "\n")
    assert proctimes.run_queue_seconds([me], proc=tmp_path) == 2.5
    assert proctimes.run_queue_seconds([me], proc=tmp_path / "nothing") is None
