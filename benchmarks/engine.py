"""Engine-level benchmark: the shipped ONNX model alone, no HTTP.

Answers which batch sizes, sequence lengths, thread counts and precision (int8 vs fp32) pay
off on this CPU, what the tokenizer costs, how fast the engine can go on the real texts the
HTTP benchmark sends (the ceiling the service is compared with), and where time goes per
operator type (ORT's own profiler).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from benchmarks.stats import latency_summary
from service.bundle import Bundle
from service.engine import Engine, session_options

ORT_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


@dataclass(frozen=True)
class Budget:
    """How long each grid case runs: at least `min_reps` calls and `min_seconds`, at most `max_reps`."""

    min_seconds: float = 1.0
    min_reps: int = 5
    max_reps: int = 2000
    warmup_reps: int = 2


QUICK_BUDGET = Budget(min_seconds=0.1, min_reps=3, max_reps=200, warmup_reps=1)


def make_session(
    model: Path, threads: int, profile_prefix: str | None = None, spin: bool = False
) -> ort.InferenceSession:
    """A CPU session with the service's settings (`service.engine.session_options`), so the
    grid measures what the service runs; `spin` as the service's `SPIN` setting."""
    options = session_options(threads, spin)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """The bundle's tokenizer with truncation at `max_length` and no baked-in padding."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def make_feed(
    session: ort.InferenceSession, ids: np.ndarray, mask: np.ndarray
) -> dict[str, np.ndarray]:
    """Inputs by name with the dtypes the graph declares (tf2onnx graphs may take int32)."""
    feed: dict[str, np.ndarray] = {}
    for spec in session.get_inputs():
        dtype = ORT_INT_TYPES.get(spec.type, np.int64)
        if "mask" in spec.name:
            feed[spec.name] = mask.astype(dtype)
        elif "type" in spec.name:
            feed[spec.name] = np.zeros_like(ids, dtype=dtype)
        else:
            feed[spec.name] = ids.astype(dtype)
    return feed


def token_pool(tokenizer: Tokenizer, texts: Sequence[str]) -> np.ndarray:
    """All token ids of the texts, concatenated: a source of realistic ids for any shape."""
    pool = [i for enc in tokenizer.encode_batch(list(texts)) for i in enc.ids]
    return np.asarray(pool or [101, 102], dtype=np.int64)


def synthetic_batch(pool: np.ndarray, batch: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """A full (unpadded) batch of real token ids: every position is computed, as in the worst case."""
    need = batch * seq_len
    reps = -(-need // len(pool))
    ids = np.tile(pool, reps)[:need].reshape(batch, seq_len)
    return ids, np.ones_like(ids)


def time_calls(run: Any, budget: Budget) -> list[float]:
    """Wall-clock seconds of repeated `run()` calls within `budget` (after warm-up)."""
    for _ in range(budget.warmup_reps):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < budget.max_reps and (
        len(times) < budget.min_reps or time.perf_counter() - start < budget.min_seconds
    ):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def grid(
    models: dict[str, Path],
    pool: np.ndarray,
    batches: Sequence[int],
    seq_lens: Sequence[int],
    threads: Sequence[int],
    budget: Budget,
    log: Any = print,
) -> list[dict[str, Any]]:
    """Latency and sequences/s for every precision x threads x batch x length case."""
    rows: list[dict[str, Any]] = []
    for precision, model in models.items():
        for n_threads in threads:
            session = make_session(model, n_threads)
            for seq_len in seq_lens:
                for batch in batches:
                    feed = make_feed(session, *synthetic_batch(pool, batch, seq_len))
                    times = time_calls(lambda f=feed, s=session: s.run(None, f), budget)
                    summary = latency_summary(times)
                    row = {
                        "precision": precision,
                        "threads": n_threads,
                        "batch": batch,
                        "seq_len": seq_len,
                        **summary,
                        "seq_per_s": round(batch * len(times) / sum(times), 1),
                    }
                    rows.append(row)
                    log(
                        f"  engine {precision} t={n_threads} b={batch:>2} L={seq_len:>3}: "
                        f"p50 {row['p50_ms']:8.2f} ms  {row['seq_per_s']:8.1f} seq/s"
                    )
            del session
    return rows


def tokenizer_cost(tokenizer: Tokenizer, texts: Sequence[str], budget: Budget) -> dict[str, Any]:
    """Microseconds per text for one-at-a-time `encode` and for `encode_batch` of all texts."""
    texts = list(texts)

    def one_by_one() -> None:
        for text in texts:
            tokenizer.encode(text)

    single = time_calls(one_by_one, budget)
    batched = time_calls(lambda: tokenizer.encode_batch(texts), budget)
    lengths = [len(enc.ids) for enc in tokenizer.encode_batch(texts)]
    return {
        "texts": len(texts),
        "encode_us_per_text": round(float(np.median(single)) / len(texts) * 1e6, 2),
        "encode_batch_us_per_text": round(float(np.median(batched)) / len(texts) * 1e6, 2),
        "tokens_p50": float(np.percentile(lengths, 50)),
        "tokens_p95": float(np.percentile(lengths, 95)),
        "tokens_max": int(max(lengths)),
    }


def real_text_throughput(
    bundle: Bundle,
    texts: Sequence[str],
    batches: Sequence[int],
    threads: int,
    min_seconds: float,
    log: Any = print,
    entities: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """End-to-end texts/s (tokenize + pad + run) on the HTTP benchmark's texts (with their
    `entities` for entity-pair models), per batch size, through the service's own `Engine` (so
    the ceiling is the code the HTTP numbers run).

    Two orders: `arrival` (the texts as they come, like a queue) and `length_sorted` by token
    count (the best a batcher that groups similar lengths could do). Every measurement covers
    whole passes over the same texts, so no order gets an easier share of them; passes repeat
    until `min_seconds`. The best row is the engine-alone ceiling.
    """
    model = Engine(bundle, threads=threads, spin=True)  # ORT default: the best this engine does
    rows: list[dict[str, Any]] = []
    lengths = [len(enc.ids) for enc in model.encode(list(texts), entities)]
    arrival = list(range(len(texts)))
    orders = {"arrival": arrival, "length_sorted": sorted(arrival, key=lengths.__getitem__)}
    for order, ordered in orders.items():
        for batch in batches:
            chunks = [
                (
                    [texts[k] for k in ordered[i : i + batch]],
                    None if entities is None else [entities[k] for k in ordered[i : i + batch]],
                )
                for i in range(0, len(ordered), batch)
            ]
            passes = 0
            per_batch: list[float] = []
            start = time.perf_counter()
            while passes == 0 or time.perf_counter() - start < min_seconds:
                for chunk, chunk_entities in chunks:
                    t0 = time.perf_counter()
                    model.infer([enc.ids for enc in model.encode(chunk, chunk_entities)])
                    per_batch.append(time.perf_counter() - t0)
                passes += 1
            elapsed = time.perf_counter() - start
            done = passes * len(ordered)
            row = {
                "order": order,
                "batch": batch,
                "threads": threads,
                "texts": done,
                "passes": passes,
                "texts_per_s": round(done / elapsed, 1),
                **{f"batch_{k}": v for k, v in latency_summary(per_batch).items()},
            }
            rows.append(row)
            log(f"  real texts {order:>13} b={batch:>2}: {row['texts_per_s']:8.1f} texts/s")
    return rows


def op_profile(
    model: Path, pool: np.ndarray, batch: int, seq_len: int, threads: int, runs: int
) -> dict[str, Any]:
    """Time per operator type for one case, from ONNX Runtime's own profiler."""
    with tempfile.TemporaryDirectory() as folder:
        session = make_session(model, threads, profile_prefix=os.path.join(folder, "ort"))
        feed = make_feed(session, *synthetic_batch(pool, batch, seq_len))
        session.run(None, feed)  # warm-up, excluded below by counting runs
        for _ in range(runs):
            session.run(None, feed)
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event.get("args", {}).get("op_name", "?")] += float(event.get("dur", 0))
    calls = runs + 1
    total = sum(per_op.values()) or 1.0
    ops = [
        {"op_type": op, "ms_per_run": round(us / calls / 1000, 3), "share": round(us / total, 4)}
        for op, us in sorted(per_op.items(), key=lambda item: -item[1])
    ]
    return {"batch": batch, "seq_len": seq_len, "threads": threads, "runs": calls, "ops": ops}
