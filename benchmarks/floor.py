"""What a request costs our service with inference taken out, beside a bare ASGI app on the
same server: the floor under issue #23's HTTP ÷ engine ratio.

Ours runs with a *stub* of the bundle: its own tokenizer and config (so normalisation,
tokenization, validation, scheduling and the thread hand-off, metrics, the access log and the
response are the real ones) and, for the model, a table-lookup graph (Gather + ReduceMean: a few
µs). The bare app answers a fixed JSON body from a few lines of ASGI on uvicorn with the
service's event loop and parser (uvloop, httptools), no access log. Both at the run's top level,
one after the other; CPU per answered request from the server's process tree, the event loop
thread's from the OS.

If the engine costs E µs of core per text in the service's plan and ours costs S µs per request
with inference taken out, HTTP ÷ plan cannot exceed E / (E + S), however well the cores are
used: the ceiling this module prints beside the measured ratio. Under load S grows (the loop
shares the cores and caches with ONNX Runtime), so the measured ratio sits below the ceiling.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import http, proctimes, stages
from benchmarks.ports import free_port
from benchmarks.server_process import Server, ServerError, python_module
from benchmarks.servers import ours_env
from service.bundle import Bundle, load_bundle, write_manifest

OURS = "ours, inference taken out"
BARE = "bare ASGI app, same uvicorn"
WARMUP_S = 2.0
LONGEST_S = 10.0  # measured seconds per server, at most (the run's --duration if shorter)
BARE_BODY = json.dumps(
    {"label": "Neutral", "score": 0.5, "scores": {"Negative": 0.25, "Neutral": 0.5,
     "Positive": 0.25}, "truncated": False, "model": "bare"},
    separators=(",", ":"),
).encode()  # fmt: skip
BARE_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(BARE_BODY)),
    ],
}


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least an ASGI app can do per request: read the body, send a fixed answer."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send(BARE_START)
    await send({"type": "http.response.body", "body": BARE_BODY})


def stub_bundle(bundle: Bundle, folder: Path) -> Path:
    """`bundle` with its graph swapped for a table lookup of the same inputs and output."""
    import onnx  # the export's dependency; a bench run has it
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(bundle.path / name, folder / name)
    vocab = len(json.loads((bundle.path / "tokenizer.json").read_text())["model"]["vocab"])
    table = np.random.default_rng(0).normal(size=(vocab, len(bundle.labels)))
    inputs = json.loads((bundle.path / "config.json").read_text()).get("inputs", {})
    dtype = TensorProto.INT64 if inputs.get("input_ids") == "int64" else TensorProto.INT32
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["rows"], axis=0),
            helper.make_node("ReduceMean", ["rows"], ["logits"], axes=[1], keepdims=0),
        ],
        "stub",
        [
            helper.make_tensor_value_info(n, dtype, ["b", "s"])
            for n in ("input_ids", "attention_mask")
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", len(bundle.labels)])],
        [numpy_helper.from_array(table.astype(np.float32), "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    write_manifest(
        folder, {"model_name": bundle.model_name, "stub": "a table lookup, for benchmarks"}
    )
    return folder


def measure(
    args: argparse.Namespace, bundle: Bundle, texts: list[str], entities: list[str] | None
) -> dict[str, Any]:
    """Ours with the stub bundle, then the bare app, at the top level: RPS and CPU µs per
    request (every thread, and the event loop thread)."""
    level = max(args.levels)
    warmup, duration = min(args.warmup, WARMUP_S), min(args.duration, LONGEST_S)
    plan = http.Plan(
        texts, [level], warmup, duration, args.timeout, entities=entities, cpus=args.server_cpus
    )
    out: dict[str, Any] = {"concurrency": level, "runs": [], "notes": []}
    with tempfile.TemporaryDirectory(prefix="bench-stub-") as tmp:
        stub = load_bundle(stub_bundle(bundle, Path(tmp) / bundle.path.name))
        port = free_port()
        env = ours_env(args, stub, port)
        servers = [
            (OURS, python_module("service"), env, port, "/ready"),
            (BARE, _bare_argv(bare := free_port(port)), {}, bare, "/"),
        ]
        for name, argv, extra, at, ready in servers:
            print(f"floor: {name}")
            try:
                out["runs"].append(_run(name, Server(name, argv, at, extra, ready), plan))
            except ServerError as exc:
                out["notes"].append(f"{name}: SKIPPED, {str(exc).splitlines()[0]}")
    return out


def _bare_argv(port: int) -> list[str]:
    return python_module(
        "uvicorn", "benchmarks.floor:bare_app", "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    )  # fmt: skip


def _run(name: str, server: Server, plan: http.Plan) -> dict[str, Any]:
    with server:
        window = proctimes.Window()
        row = http.run_level(
            "127.0.0.1", server.port, plan.requests(server.port), plan.levels[0], plan.warmup,
            plan.duration, plan.timeout,
            at_window_start=lambda: window.open(server.pid), at_window_end=window.close,
        )  # fmt: skip
    per_request = stages.cross_check(window.cpu_s, None, row["ok"], window.loop_cpu_s)
    return {
        "name": name,
        "rps": row["rps"],
        "errors": row["errors"],
        "cpu_us_per_request": per_request["cpu_us"],
        "loop_cpu_us_per_request": per_request["loop_cpu_us"],
    }


def ceiling(plan_texts_per_s: float, cores: float, request_us: float) -> float:
    """The most HTTP ÷ plan can be when every request costs `request_us` of CPU besides its
    inference, the engine doing `plan_texts_per_s` on `cores`."""
    engine_us = cores / plan_texts_per_s * 1e6
    return round(engine_us / (engine_us + request_us), 3)


def section(results: dict[str, Any]) -> list[str]:
    """The report's table: per workload, ours without inference, the bare app, the engine's
    core time per text in the service's plan, and the ceiling that puts on HTTP ÷ plan beside
    the measured ratio (`http_vs_engine`, stored by `results.compare`)."""
    from benchmarks.report import _table  # the report's own table writer (it imports this)

    runs = results.get("workloads", {}).get("runs", [])
    parts = [(results if i == 0 else run, run) for i, run in enumerate(runs)]
    floors = [(part, run, part["floor"]) for part, run in parts if part.get("floor")]
    rows = [_row(part, run, floor) for part, run, floor in floors]
    rows = [row for row in rows if row]
    if not rows:
        return []
    return [
        "## The floor under HTTP ÷ engine",
        "",
        "Ours with the bundle's tokenizer and config but a table-lookup graph (inference taken"
        " out, everything else real), and a bare ASGI app on the same uvicorn, each at the top"
        " level in a run of its own (benchmarks/floor.py). The engine's core time per text is"
        " the service's plan (mean of the readings before and after HTTP); with ours costing"
        " its CPU per request on top, HTTP ÷ plan cannot exceed the ceiling, however well the"
        " cores are used.",
        "",
        *(f"- {note}" for _, _, floor in floors for note in floor["notes"]),
        *_table(
            [
                "workload",
                "concurrency",
                "ours w/o inference RPS",
                "its CPU µs/request",
                "its loop thread µs/request",
                "bare app RPS",
                "bare app CPU µs/request",
                "engine core µs/text (plan)",
                "ceiling on HTTP ÷ plan",
                "HTTP ÷ plan measured",
            ],
            rows,
        ),
    ]


def _row(part: dict[str, Any], run: dict[str, Any], floor: dict[str, Any]) -> list[Any] | None:
    """One workload's cells; None when ours did not run without inference."""
    by_name = {r["name"]: r for r in floor["runs"]}
    ours, bare = by_name.get(OURS), by_name.get(BARE)
    if ours is None:
        return None
    single = [p for p in part.get("engine", {}).get("service_plan", []) if p["max_batch"] == 1]
    cores = single[0]["sessions"] * single[0]["threads"] if single else None
    ratio = run.get("http_vs_engine") or {}
    plan = ratio.get("plan_texts_per_s")  # the mean of the readings before and after HTTP
    engine_us = round(cores / plan * 1e6, 1) if cores and plan else None
    top = ceiling(plan, cores, ours["cpu_us_per_request"]) if cores and plan else None
    measured = ratio.get("ratio_to_plan")
    return [
        run["workload"], floor["concurrency"], ours["rps"], ours["cpu_us_per_request"],
        ours["loop_cpu_us_per_request"], bare and bare["rps"],
        bare and bare["cpu_us_per_request"], engine_us, top, measured and round(measured, 3),
    ]  # fmt: skip
