"""What a request costs our service with inference taken out, beside the least a Python server
can do for the same answer and a bare ASGI app on the same server: the floor under issue #23's
HTTP ÷ engine ratio.

Ours runs with a *stub* of the bundle: its own tokenizer and config (so normalisation,
tokenization, validation, scheduling and the thread hand-off, metrics, the access log and the
response are the real ones) and, for the model, a table-lookup graph (Gather + ReduceMean: a few
µs). The bare app answers a fixed JSON body from a few lines of ASGI on uvicorn with the
service's event loop and parser (uvloop, httptools), no access log. Between them, *the
contract app*: the same engine (`service.engine.Engine`: normalisation, the pair tokenizer, one
`session.run` per request in a pool of the service's size) behind a few lines of ASGI, with none
of what the service adds (validation, admission, timeouts, metrics, the access log): run on the
stub for its CPU per request, and on the real bundle for the HTTP ÷ plan a minimal Python
server reaches on this stack. Each at the run's top level, one after the other; CPU per
answered request from the server's process tree, the event loop thread's from the OS.

If the engine costs E µs of core per text in the service's plan and ours costs S µs per request
with inference taken out, HTTP ÷ plan cannot exceed E / (E + S), however well the cores are
used: the ceiling this module prints beside the measured ratio. The load generator runs on the
same cores, so its C µs per request come off them too: E / (E + S + C), the second ceiling, is
the one a measurement on this machine can reach. Under load S grows (the loop shares the cores
and caches with ONNX Runtime), so the measured ratio sits below both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import http, proctimes, stages
from benchmarks.ports import free_port
from benchmarks.server_process import Server, ServerError, python_module
from benchmarks.servers import ours_env
from service.bundle import Bundle, load_bundle, write_manifest
from service.engine import Engine

OURS = "ours, inference taken out"
CONTRACT = "contract app, inference taken out"
CONTRACT_MODEL = "contract app, the model"
BARE = "bare ASGI app, same uvicorn"
BUNDLE_ENV = "FLOOR_BUNDLE"  # the contract app's bundle folder
WARMUP_S = 2.0
LONGEST_S = 10.0  # measured seconds per server, at most (the run's --duration if shorter)
BARE_BODY = json.dumps(
    {"label": "Neutral", "score": 0.5, "scores": {"Negative": 0.25, "Neutral": 0.5,
     "Positive": 0.25}, "truncated": False, "model": "bare"},
    separators=(",", ":"),
).encode()  # fmt: skip


def _start(length: int) -> dict[str, Any]:
    """A 200 with a JSON body of `length` bytes."""
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % length)],
    }


BARE_START = _start(len(BARE_BODY))


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least an ASGI app can do per request: read the body, send a fixed answer."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await _body(receive)
    await send(BARE_START)
    await send({"type": "http.response.body", "body": BARE_BODY})


async def _lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def _body(receive: Any) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


class ContractApp:
    """The least a Python server does for `POST /predict`'s answer with the service's engine:
    parse the JSON, normalise and tokenize on the loop (as the service does for a tweet), one
    `session.run` in a thread of a pool the service's size, the answer as JSON. Nothing else:
    no validation beyond what a KeyError gives, no admission, timeouts, metrics or log."""

    def __init__(self, bundle: Path, workers: int) -> None:
        self.engine = Engine(load_bundle(bundle), threads=1)
        self.engine.warmup(1, self.engine.max_length)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="infer")
        self.name = self.engine.bundle.model_name

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = await _body(receive)
        answer = await self.answer(body) if scope["method"] == "POST" else b"{}"
        await send(_start(len(answer)))
        await send({"type": "http.response.body", "body": answer})

    async def answer(self, body: bytes) -> bytes:
        request = json.loads(body)
        entity = request.get("entity")
        engine = self.engine
        (encoded,) = engine.encode([request["text"]], None if entity is None else [entity])
        loop = asyncio.get_running_loop()
        (probs,) = await loop.run_in_executor(self.pool, engine.infer, [encoded.ids])
        best = int(probs.argmax())
        scores = {label: round(float(p), 4) for label, p in zip(engine.labels, probs, strict=True)}
        return json.dumps(
            {"label": engine.labels[best], "score": scores[engine.labels[best]], "scores": scores,
             "truncated": encoded.truncated, "model": self.name},
            separators=(",", ":"),
        ).encode()  # fmt: skip


def contract_app() -> ContractApp:
    """uvicorn's factory: the bundle from the environment, one pool thread per core (the
    service's default plan: one single-threaded run per core)."""
    return ContractApp(Path(os.environ[BUNDLE_ENV]), len(os.sched_getaffinity(0)))


def stub_bundle(bundle: Bundle, folder: Path, matmuls: int = 0) -> Path:
    """`bundle` with its graph swapped for a table lookup of the same inputs and output;
    `matmuls` products of 512 x 512 matrices per run (tied to the input, so none is folded
    away, and adding 0 to the logits) make it a slow one (20 of them: 29 ms on one idle core)."""
    import onnx  # the export's dependency; a bench run has it
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(bundle.path / name, folder / name)
    vocab = len(json.loads((bundle.path / "tokenizer.json").read_text())["model"]["vocab"])
    table = np.random.default_rng(0).normal(size=(vocab, len(bundle.labels)))
    inputs = json.loads((bundle.path / "config.json").read_text()).get("inputs", {})
    dtype = TensorProto.INT64 if inputs.get("input_ids") == "int64" else TensorProto.INT32
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["rows"], axis=0),
        helper.make_node(
            "ReduceMean", ["rows"], ["lookup" if matmuls else "logits"], axes=[1], keepdims=0
        ),
    ]
    constants = [numpy_helper.from_array(table.astype(np.float32), "table")]
    if matmuls:
        nodes += _busy_work(matmuls)
        constants += [
            numpy_helper.from_array(np.eye(512, dtype=np.float32), "eye"),
            numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        ]
    graph = helper.make_graph(
        nodes,
        "stub",
        [
            helper.make_tensor_value_info(n, dtype, ["b", "s"])
            for n in ("input_ids", "attention_mask")
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", len(bundle.labels)])],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    write_manifest(
        folder, {"model_name": bundle.model_name, "stub": "a table lookup, for benchmarks"}
    )
    return folder


def _busy_work(matmuls: int) -> list[Any]:
    """`lookup` + 0 x the mean of the identity multiplied by itself `matmuls` times, starting
    from a matrix scaled by the input ids' mean (so the chain waits for each run's input)."""
    from onnx import helper

    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=1),  # FLOAT
        helper.make_node("ReduceMean", ["ids"], ["seed"], keepdims=0),
        helper.make_node("Mul", ["eye", "seed"], ["m0"]),
    ]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"m{i}", "eye"], [f"m{i + 1}"]))
    return [
        *nodes,
        helper.make_node("ReduceMean", [f"m{matmuls}"], ["busy"], keepdims=0),
        helper.make_node("Mul", ["busy", "zero"], ["nothing"]),
        helper.make_node("Add", ["lookup", "nothing"], ["logits"]),
    ]


def measure(
    args: argparse.Namespace, bundle: Bundle, texts: list[str], entities: list[str] | None
) -> dict[str, Any]:
    """Ours and the contract app with the stub bundle, the contract app with the model, then
    the bare app, at the top level: RPS and CPU µs per request (every thread, and the event
    loop thread)."""
    level = max(args.levels)
    warmup, duration = min(args.warmup, WARMUP_S), min(args.duration, LONGEST_S)
    plan = http.Plan(
        texts, [level], warmup, duration, args.timeout, entities=entities, cpus=args.server_cpus
    )
    out: dict[str, Any] = {"concurrency": level, "runs": [], "notes": []}
    with tempfile.TemporaryDirectory(prefix="bench-stub-") as tmp:
        stub = load_bundle(stub_bundle(bundle, Path(tmp) / bundle.path.name))
        contract = _uvicorn("benchmarks.floor:contract_app", "--factory")
        servers: dict[str, tuple[list[str], Callable[[int], dict[str, str]], str]] = {
            # name -> argv, environment for a port, ready path (uvicorn's port goes on its argv)
            OURS: (python_module("service"), lambda port: ours_env(args, stub, port), "/ready"),
            CONTRACT: (contract, lambda _: {BUNDLE_ENV: str(stub.path)}, "/"),
            CONTRACT_MODEL: (contract, lambda _: {BUNDLE_ENV: str(bundle.path)}, "/"),
            BARE: (_uvicorn("benchmarks.floor:bare_app"), lambda _: {}, "/"),
        }
        for name, (argv, env, ready) in servers.items():
            print(f"floor: {name}")
            port = free_port()
            ports = [] if name == OURS else ["--port", str(port)]
            server = Server(name, [*argv, *ports], port, env(port), ready)
            try:
                out["runs"].append(row := _run(name, server, plan))
            except ServerError as exc:
                out["notes"].append(f"{name}: SKIPPED, {str(exc).splitlines()[0]}")
                continue
            if row["errors"]:
                out["notes"].append(f"{name}: {row['errors']} errors")
    return out


def _uvicorn(app: str, *options: str) -> list[str]:
    """uvicorn as the service runs it (uvloop, httptools), no access log; the port follows."""
    return python_module(
        "uvicorn", app, *options, "--host", "127.0.0.1", "--loop", "uvloop", "--http",
        "httptools", "--no-access-log", "--log-level", "warning",
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
        "client_cpu_us_per_request": row["client_cpu_us_per_request"],
    }


def ceiling(plan_texts_per_s: float, cores: float, request_us: float) -> float:
    """The most HTTP ÷ plan can be when every request costs `request_us` of CPU besides its
    inference, the engine doing `plan_texts_per_s` on `cores`."""
    engine_us = cores / plan_texts_per_s * 1e6
    return round(engine_us / (engine_us + request_us), 3)


def section(results: dict[str, Any]) -> list[str]:
    """The report's table: per workload, ours, the contract app and the bare app without
    inference, the ceiling each one's CPU per request puts on HTTP ÷ plan, and the ratio ours
    and the contract app reach with the model (ours: `http_vs_engine`, stored by
    `results.compare`)."""
    from benchmarks.report import _table  # the report's own table writer (it imports this)

    runs = results.get("workloads", {}).get("runs", [])
    parts = [(results if i == 0 else run, run) for i, run in enumerate(runs)]
    floors = [(part, run, part["floor"]) for part, run in parts if part.get("floor")]
    rows = [row for part, run, floor in floors for row in _rows(part, run, floor)]
    if not rows:
        return []
    return [
        "## The floor under HTTP ÷ engine",
        "",
        "Each server at the top level in a run of its own (benchmarks/floor.py), first with"
        " inference taken out (the bundle's tokenizer and config, a table-lookup graph), then"
        " the contract app with the model. *Ours*: the service with its defaults. *Contract"
        " app*: the same engine (normalisation, tokenizer, one run per request in a pool of the"
        " service's size) behind a few lines of ASGI, nothing else: the least a Python server"
        " on this stack does for the answer. *Bare app*: fixed JSON. With a server's CPU per"
        " request on top of the engine's core time per text (the service's plan, mean of the"
        " readings before and after HTTP), HTTP ÷ plan cannot exceed the ceiling, however well"
        " the cores are used; with the load generator's CPU per request on the same cores as"
        " well, it cannot exceed the second ceiling on this machine.",
        "",
        *(f"- {note}" for _, _, floor in floors for note in floor["notes"]),
        *_table(
            [
                "workload",
                "server",
                "concurrency",
                "w/o inference: RPS",
                "CPU µs/request",
                "loop thread µs/request",
                "ceiling on HTTP ÷ plan",
                "load generator µs/request",
                "ceiling with it",
                "with the model: HTTP ÷ plan",
                "engine core µs/text (plan)",
            ],
            rows,
        ),
    ]


def _rows(part: dict[str, Any], run: dict[str, Any], floor: dict[str, Any]) -> list[list[Any]]:
    """One workload's rows; none when ours did not run without inference."""
    by_name = {r["name"]: r for r in floor["runs"]}
    if OURS not in by_name:
        return []
    single = [p for p in part.get("engine", {}).get("service_plan", []) if p["max_batch"] == 1]
    cores = single[0]["sessions"] * single[0]["threads"] if single else None
    ratio = run.get("http_vs_engine") or {}
    plan = ratio.get("plan_texts_per_s")  # the mean of the readings before and after HTTP
    engine_us = round(cores / plan * 1e6, 1) if cores and plan else None
    model = by_name.get(CONTRACT_MODEL)
    measured = {
        OURS: ratio.get("ratio_to_plan"),
        CONTRACT: model and plan and model["rps"] / plan,
    }
    rows = []
    for name, label in ((OURS, "ours"), (CONTRACT, "contract app"), (BARE, "bare app")):
        if (stub := by_name.get(name)) is None:
            continue
        cpu, client = stub["cpu_us_per_request"], stub.get("client_cpu_us_per_request")
        top = ceiling(plan, cores, cpu) if cores and plan else None
        shared = ceiling(plan, cores, cpu + client) if cores and plan and client else None
        got = measured.get(name)
        rows.append([
            run["workload"], label, floor["concurrency"], stub["rps"], cpu,
            stub["loop_cpu_us_per_request"], top, client, shared, got and round(got, 3),
            engine_us,
        ])  # fmt: skip
    return rows
