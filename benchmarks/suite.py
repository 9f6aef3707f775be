"""The engine suite of `python -m benchmarks`: the engine alone (grid, tokenizer, real texts,
the service's plan, ORT's profile) and the distance to the CPU's int8 GEMM rate, no HTTP; for a
further workload, only the real texts and the plan (`engine_alone`)."""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks import engine, limit
from service.settings import Settings


def run_engine(
    args: argparse.Namespace, bundle: Any, texts: list[str], entities: list[str] | None
) -> dict[str, Any]:
    notes: list[str] = []
    models = {"int8": bundle.model_path}
    if args.fp32_model and args.fp32_model.is_file():
        models["fp32"] = args.fp32_model
    else:
        notes.append(
            f"fp32 column skipped: {args.fp32_model} not found (export --keep-intermediate)"
        )
    budget = engine.QUICK_BUDGET if args.quick else engine.Budget()
    tokenizer = engine.load_tokenizer(bundle.tokenizer_path, bundle.max_length)
    pool = engine.token_pool(tokenizer, texts)
    seq_lens = [length for length in args.seq_lens if length <= bundle.max_length]
    if len(seq_lens) < len(args.seq_lens):
        notes.append(f"sequence lengths above the bundle's max_length {bundle.max_length} skipped")
    print("engine grid:")
    grid = engine.grid(models, pool, args.batches, seq_lens, args.threads, budget)
    print("tokenizer:")
    tok = engine.tokenizer_cost(tokenizer, texts[:500], budget)
    print(f"  {tok}")
    alone = engine_alone(args, bundle, texts, entities)
    profile = engine.op_profile(
        bundle.model_path, pool, 8, 64, max(args.threads), 5 if args.quick else 30
    )
    top = ", ".join(f"{o['op_type']} {o['share']:.0%}" for o in profile["ops"][:5])
    print(f"ORT profile (batch 8 x 64): {top}")
    for note in notes:
        print(f"  note: {note}")
    return {
        "models": {k: str(v) for k, v in models.items()},
        "notes": notes,
        "grid": grid,
        "tokenizer": tok,
        **alone,
        "profile": profile,
    }


def engine_alone(
    args: argparse.Namespace, bundle: Any, texts: list[str], entities: list[str] | None
) -> dict[str, Any]:
    """What a workload's HTTP figures are held to, on its texts: real texts end to end per
    batch size (the best is the engine-alone ceiling) and the service's own plan."""
    print("real texts:")
    n = sample_size(args)
    real = engine.real_text_throughput(
        bundle,
        texts[:n],
        args.batches,
        max(args.threads),
        0.3 if args.quick else 2.0,
        entities=None if entities is None else entities[:n],
    )
    print("the service's plan (default settings, no HTTP):")
    defaults = Settings(bundles=(bundle.path,))
    plans = [
        service_plan(args, bundle, texts, entities, max_batch)
        for max_batch in sorted({1, defaults.max_batch})
    ]
    return {"real_texts": real, "service_plan": plans}


def sample_size(args: argparse.Namespace) -> int:
    """How many of a workload's texts the engine-alone measurements run."""
    return 64 if args.quick else 512


def service_plan(
    args: argparse.Namespace,
    bundle: Any,
    texts: list[str],
    entities: list[str] | None,
    max_batch: int = 1,
) -> dict[str, Any]:
    """The engine in the service's plan with its default settings (no HTTP) on the workload's
    first texts, `max_batch` rows per run at most (1: what one-text requests run)."""
    n = sample_size(args)
    row = limit.service_plan(
        bundle,
        texts[:n],
        None if entities is None else entities[:n],
        Settings(bundles=(bundle.path,)),
        max_batch,
        0.3 if args.quick else 3.0,
    )
    print(f"  max_batch {max_batch:>2}: {row['texts_per_s']:8.1f} texts/s ({row})")
    return row


def distance(
    results: dict[str, Any],
    bundle: Any,
    texts: list[str],
    entities: list[str] | None,
    reference: str,
) -> dict[str, Any]:
    """The fraction of the CPU's int8 GEMM rate the service reaches (HTTP at the highest
    level; the engine in the service's plan when HTTP did not run)."""
    servers = {s["name"]: s for s in results.get("http", {}).get("servers", []) if s.get("levels")}
    ours = servers.get(reference)
    if ours:
        top = max(ours["levels"], key=lambda lvl: lvl["concurrency"])
        rate, source = top["rps"], f"HTTP {reference} at {top['concurrency']} users"
    else:
        best = max(results["engine"]["service_plan"], key=lambda p: p["texts_per_s"])
        rate, source = (
            best["texts_per_s"],
            f"engine in the service plan (max_batch {best['max_batch']})",
        )
    print("distance to the int8 GEMM rate:")
    out = {
        "source": source,
        **limit.distance(bundle, texts[:512], entities and entities[:512], rate),
    }
    print(f"  {out}")
    return out
