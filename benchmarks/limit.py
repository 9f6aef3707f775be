"""How far the service is from the machine: the engine in the service's own plan, the int8
multiply-adds one tweet costs, and the CPU's sustained int8 GEMM rate.

- `service_plan`: texts/s of the service's engines (default settings: `pool_size` sessions of
  `threads` intra-op threads, spinning off) running what the service runs: with `max_batch` 1,
  one text per run (one-tweet requests); otherwise requests of `REQUEST_TEXTS` texts in arrival
  order, each cut by `service.scheduler.plan` (length-sorted, row/token budget, <= 10 % padding).
  No HTTP: this is the ceiling the HTTP figures are held to.
- `int8_macs`: multiply-adds in the graph's int8 GEMMs per token (weights K x N of every
  MatMulInteger(ToFloat)/QAttention), times the mean token count of the texts.
- `gemm_rate`: one large MatMulIntegerToFloat (u8 x s8, the kernel the graph runs) in ONNX
  Runtime, as one 2-thread run and as one 1-thread run per core side by side; the better is
  the sustained rate. The fraction = texts/s x MACs per text / that rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.bundle import Bundle
from service.engine import Engine, session_options
from service.scheduler import plan
from service.settings import Settings

REQUEST_TEXTS = 64  # texts per request in the multi-text plan (MAX_TEXTS' default)
INT8_GEMMS = ("MatMulInteger", "MatMulIntegerToFloat", "QAttention", "DynamicQuantizeMatMul")


def service_plan(
    bundle: Bundle,
    texts: Sequence[str],
    entities: Sequence[str] | None,
    settings: Settings,
    max_batch: int,
    min_seconds: float = 2.0,
) -> dict[str, Any]:
    """texts/s of `settings.pool_size` engines running the service's plan over `texts`."""
    engines = [
        Engine(bundle, threads=settings.threads, spin=settings.spin)
        for _ in range(settings.pool_size)
    ]
    rows = [enc.ids for enc in engines[0].encode(list(texts), entities)]
    size = REQUEST_TEXTS if max_batch > 1 else 1
    rounds = [rows[i : i + size] for i in range(0, len(rows), size)]
    batches = [
        [chunk[k] for k in group]
        for chunk in rounds
        for group in plan([len(r) for r in chunk], max_batch, settings.max_tokens)
    ]
    for engine in engines:  # warm-up: every batch shape once per session
        for batch in batches[:4]:
            engine.infer(batch)
    lock = threading.Lock()
    cursor = [0]

    def worker(engine: Engine, stop: float) -> int:
        done = 0
        while time.perf_counter() < stop:
            with lock:
                batch = batches[cursor[0] % len(batches)]
                cursor[0] += 1
            engine.infer(batch)
            done += len(batch)
        return done

    start = time.perf_counter()
    with ThreadPoolExecutor(len(engines)) as pool:
        done = sum(pool.map(worker, engines, [start + min_seconds] * len(engines)))
    elapsed = time.perf_counter() - start
    return {
        "max_batch": max_batch,
        "sessions": len(engines),
        "threads": settings.threads,
        "batches_per_pass": len(batches),
        "mean_rows_per_batch": round(len(rows) / len(batches), 2),
        "texts_per_s": round(done / elapsed, 1),
    }


def int8_macs(model: onnx.ModelProto) -> dict[str, Any]:
    """int8 multiply-adds per token of the graph's weight GEMMs (and how many GEMMs)."""
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    per_token = 0
    gemms = 0
    for node in model.graph.node:
        if node.op_type in INT8_GEMMS and len(node.input) > 1 and node.input[1] in shapes:
            k, n = shapes[node.input[1]][-2:]
            per_token += int(k) * int(n)
            gemms += 1
    return {"int8_gemms": gemms, "macs_per_token": per_token}


def gemm_rate(
    m: int = 2048, k: int = 1024, n: int = 1024, min_seconds: float = 2.0
) -> dict[str, Any]:
    """Sustained int8 multiply-adds/s of ONNX Runtime's u8 x s8 GEMM on this CPU."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, size=(k, n), dtype=np.int8)
    graph = helper.make_graph(
        [
            helper.make_node(
                "MatMulIntegerToFloat",
                ["a", "w", "one", "w_scale", "zp"],
                ["y"],
                domain="com.microsoft",
            )
        ],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        [
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.full(n, 0.01, np.float32), "w_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "zp"),
        ],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8  # as the exported bundles: ORT 1.29 reads IR <= 13, onnx writes 14
    blob = model.SerializeToString()
    a = rng.integers(0, 256, size=(m, k), dtype=np.uint8)

    def session(threads: int) -> Any:
        # Spinning on, deliberately (ORT's default, as this was always measured): the rate is
        # the kernel's ceiling, back-to-back runs with nothing else wanting the cores.
        options = session_options(threads, spin=True)
        return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])

    def runs(s: Any, stop: float) -> int:
        s.run(None, {"a": a})
        count = 0
        while time.perf_counter() < stop:
            s.run(None, {"a": a})
            count += 1
        return count

    layouts = {"1 run x 2 threads": [session(2)], "2 runs x 1 thread": [session(1), session(1)]}
    rates = {}
    for name, sessions in layouts.items():
        start = time.perf_counter()
        with ThreadPoolExecutor(len(sessions)) as pool:
            count = sum(pool.map(runs, sessions, [start + min_seconds] * len(sessions)))
        rates[name] = count * m * k * n / (time.perf_counter() - start)
    best = max(rates, key=lambda key: rates[key])
    return {
        "shape": [m, k, n],
        "gmacs_per_s": {key: round(v / 1e9, 1) for key, v in rates.items()},
        "best": best,
        "best_gmacs_per_s": round(rates[best] / 1e9, 1),
    }


def distance(
    bundle: Bundle, texts: Sequence[str], entities: Sequence[str] | None, texts_per_s: float
) -> dict[str, Any]:
    """MACs per mean text, the GEMM ceiling, and the fraction of it `texts_per_s` reaches."""
    engine = Engine(bundle, threads=1)
    tokens = float(np.mean([len(e.ids) for e in engine.encode(list(texts), entities)]))
    macs = int8_macs(onnx.load(bundle.model_path))
    rate = gemm_rate()
    per_text = macs["macs_per_token"] * tokens
    achieved = texts_per_s * per_text
    return {
        **macs,
        "mean_tokens": round(tokens, 1),
        "macs_per_text": round(per_text),
        "gemm": rate,
        "texts_per_s": texts_per_s,
        "achieved_gmacs_per_s": round(achieved / 1e9, 2),
        "fraction_of_gemm_rate": round(achieved / (rate["best_gmacs_per_s"] * 1e9), 3),
    }
