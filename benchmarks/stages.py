"""Issue #23: the core time a request costs outside inference, by stage of the request path,
from py-spy's samples of the running service.

A sample is one thread seen on a core or waiting for one (py-spy's non-idle test is the OS
thread state R) at one tick, so a stage's samples ÷ the rate are the thread-seconds it took;
divided by the requests answered while sampling, the core time it costs per request.

A stack belongs to the stage of its innermost frame that names one (`SPECIFIC`), so a
`json.dumps` inside the response is the response and `logging` inside the middleware is the
access log. Frames that serve every stage (asyncio, threading, queue: `GENERIC`) decide only
a stack no specific frame claims, and only as its innermost frame: the loop's own C work
under `Runner.run`, a thread waking up; unknown code in a thread is "other". A frame matches a rule by its path (py-spy's short
path, `package/module.py`) and, when the rule names functions, by the last named part of its
qualified name (py-spy 0.4 writes `Class.method`, older versions `method`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmarks import pyspy

ACCEPT = "accept/parse"
ROUTING = "routing"
VALIDATION = "validation"
TOKENISATION = "tokenisation"
SCHEDULING = "scheduling and thread hand-off"
GLUE = "inference glue (pad, softmax)"
METRICS = "metrics"
ACCESS_LOG = "access log"
RESPONSE = "response"
EVENT_LOOP = "event loop"
OTHER = "other"
INFERENCE = "inference (session.run)"
# Outside inference, in the order of a request's path (the report's rows).
STAGES = (
    ACCEPT, ROUTING, VALIDATION, TOKENISATION, SCHEDULING, GLUE, METRICS, ACCESS_LOG, RESPONSE,
    EVENT_LOOP, OTHER,
)  # fmt: skip

Rule = tuple[str, str, frozenset[str] | None]  # stage, path (suffix or folder), functions


def _rule(stage: str, path: str, *functions: str) -> Rule:
    return stage, path, frozenset(functions) or None


UVICORN_RESPONSE = (
    "send", "send_500_response", "on_response_complete", "_unset_keepalive_if_required",
    "_get_status_line",
)  # fmt: skip
# Within a frame the first matching rule wins: a file's named functions before the file.
SPECIFIC: tuple[Rule, ...] = (
    _rule(INFERENCE, "onnxruntime/"),
    _rule(GLUE, "service/engine.py", "_run", "infer", "infer_alone", "pad_right"),
    _rule(TOKENISATION, "service/engine.py", "encode"),
    _rule(RESPONSE, "service/engine.py", "project"),
    _rule(TOKENISATION, "service/api.py", "encode"),
    _rule(RESPONSE, "service/api.py", "render", "scores"),
    _rule(TOKENISATION, "service/preprocess.py"),
    _rule(TOKENISATION, "tokenizers/"),
    _rule(RESPONSE, "service/app.py", "_json"),
    _rule(RESPONSE, "service/asgi.py", "send_observed"),
    _rule(ACCESS_LOG, "service/asgi.py", "_log"),
    _rule(ROUTING, "service/asgi.py", "PredictFirst.__call__"),  # the direct route to predict
    _rule(METRICS, "service/asgi.py"),  # ObserveMiddleware's own lines: counting and timing
    _rule(TOKENISATION, "service/app.py", "_encode"),
    _rule(SCHEDULING, "service/app.py", "_infer", "_reject"),
    _rule(VALIDATION, "service/app.py", "predict", "authorize", "loaded"),  # predict's checks
    _rule(RESPONSE, "service/payload.py", "render"),
    _rule(VALIDATION, "service/payload.py"),
    _rule(VALIDATION, "service/schema.py"),
    _rule(VALIDATION, "msgspec/"),
    _rule(RESPONSE, "service/registry.py", "render"),
    _rule(VALIDATION, "service/registry.py", "pick", "full"),
    _rule(SCHEDULING, "service/scheduler.py"),
    _rule(SCHEDULING, "service/backoff.py"),
    _rule(SCHEDULING, "concurrent/futures/"),
    _rule(METRICS, "service/metrics.py"),
    _rule(METRICS, "prometheus_client/"),
    _rule(ACCESS_LOG, "service/logs.py"),
    _rule(ACCESS_LOG, "logging/"),
    _rule(RESPONSE, "service/protocol.py", "write", "writelines", "flush", "write_eof"),
    _rule(ACCEPT, "service/protocol.py"),  # the header timeout around uvicorn's parser
    _rule(RESPONSE, "uvicorn/protocols/http/httptools_impl.py", *UVICORN_RESPONSE),
    _rule(ACCEPT, "uvicorn/protocols/http/httptools_impl.py"),  # data_received, on_url, ...
    _rule(RESPONSE, "uvicorn/protocols/http/flow_control.py"),
    _rule(ACCEPT, "uvicorn/protocols/utils.py"),
    _rule(ACCEPT, "httptools/"),
    _rule(ROUTING, "uvicorn/middleware/"),
    _rule(RESPONSE, "starlette/responses.py"),
    _rule(RESPONSE, "starlette/_exception_handler.py", "sender"),  # wraps `send`
    _rule(RESPONSE, "starlette/middleware/errors.py", "_send"),
    _rule(ROUTING, "starlette/"),  # the app, middleware stack, router, Request and Headers
)
GENERIC: tuple[Rule, ...] = (
    _rule(SCHEDULING, "threading.py"),
    _rule(SCHEDULING, "queue.py"),
    _rule(EVENT_LOOP, "asyncio/"),
    _rule(EVENT_LOOP, "uvloop/"),
    _rule(EVENT_LOOP, "selectors.py"),
    _rule(EVENT_LOOP, "uvicorn/server.py"),
    _rule(EVENT_LOOP, "uvicorn/_compat.py"),
    _rule(EVENT_LOOP, "uvicorn/main.py"),
)


# Parts of a qualified name that are not a function of their own: a comprehension or lambda
# is the work of the function that holds it.
ANONYMOUS = frozenset(
    {"<locals>", "<listcomp>", "<genexpr>", "<dictcomp>", "<setcomp>", "<lambda>"}
)


def frame_parts(frame: str) -> tuple[str, str]:
    """`Class.method.<locals>.<listcomp> (pkg/mod.py:12)` -> (`Class.method`, `pkg/mod.py`):
    the function and the name that holds it, if any."""
    name, _, where = frame.partition(" (")
    named = [part for part in name.split(".") if part not in ANONYMOUS] or [name]
    return ".".join(named[-2:]), where.rsplit(":", 1)[0].rstrip(")")


def _matches(rule: Rule, function: str, path: str) -> bool:
    """A rule's functions name a function (`method`) or, where two classes in one file share
    a method name, a class's (`Class.method`)."""
    _, where, functions = rule
    in_file = path.endswith(where) if where.endswith(".py") else where in path
    if not in_file or functions is None:
        return in_file
    return function in functions or function.rpartition(".")[2] in functions


def _innermost(stack: list[str], rules: tuple[Rule, ...]) -> str | None:
    for frame in reversed(stack):
        function, path = frame_parts(frame)
        for rule in rules:
            if _matches(rule, function, path):
                return rule[0]
    return None


def stage(stack: list[str]) -> str:
    """The stage a sample's stack (outermost frame first) belongs to."""
    return _innermost(stack, SPECIFIC) or _innermost(stack[-1:], GENERIC) or OTHER


def count(stacks: Iterable[tuple[list[str], int]]) -> Counter[str]:
    """Samples by stage."""
    out: Counter[str] = Counter()
    for stack, samples in stacks:
        out[stage(stack)] += samples
    return out


def per_request(
    samples: Mapping[str, int], rate: float, seconds: float, rps: float
) -> dict[str, Any]:
    """Core µs per request by stage: `samples` taken at `rate` per second over `seconds`, while
    the service answered `rps` requests per second (so rps × seconds requests were sampled)."""
    requests = rps * seconds

    def us(n: int) -> float | None:
        return round(n / rate / requests * 1e6, 1) if requests > 0 else None

    outside = sum(samples.get(name, 0) for name in STAGES)
    inference = samples.get(INFERENCE, 0)
    return {
        "rate": rate,
        "seconds": seconds,
        "requests": round(requests, 1),
        "stages": [
            {"stage": name, "samples": samples.get(name, 0), "us": us(samples.get(name, 0))}
            for name in STAGES
        ],
        "outside_inference": {"samples": outside, "us": us(outside)},
        "inference": {"samples": inference, "us": us(inference)},
    }


def cross_check(
    cpu_s: float, run_queue_s: float | None, answered: int, loop_cpu_s: float | None = None
) -> dict[str, Any]:
    """The server's own totals per request in the same window, from the OS: CPU of every
    thread (native ones py-spy cannot see included), CPU of the event loop's thread alone, and
    the time its threads waited for a core (which py-spy's samples count, as the thread is
    runnable)."""
    if answered <= 0:
        return {"cpu_us": None, "loop_cpu_us": None, "run_queue_us": None}

    def us(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds / answered * 1e6, 1)

    return {"cpu_us": us(cpu_s), "loop_cpu_us": us(loop_cpu_s), "run_queue_us": us(run_queue_s)}


def profile(raw: Path, rate: float, seconds: float, rps: float) -> dict[str, Any]:
    """A py-spy raw file's per-request core time by stage."""
    return per_request(count(pyspy.stacks(raw)), rate, seconds, rps)
