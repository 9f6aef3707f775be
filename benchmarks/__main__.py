"""`python -m benchmarks`: engine, HTTP and peer benchmarks in one run, written as JSON + Markdown + PNG.

Example (what `make bench` runs):
    python -m benchmarks --bundle models/sentiment-3class --data ../shared/data/twitter_entity
Development runs: add --quick (small grid, 2 s per level).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks import engine, http, limit, paired, report
from benchmarks.machine import busy_processes, describe, machine_info
from benchmarks.peers.optimum_ort import (
    optimize_and_quantize,
    peer_deps_missing,
    prepare_model_dir,
)
from benchmarks.ports import free_port
from benchmarks.texts import load_tweets
from service.bundle import load_bundle
from service.settings import Settings

TARGET_RPS = 250.0
TARGET_HTTP_VS_ENGINE = 0.8
TARGET_SPEEDUP_VS_SEED = 15.0
TARGET_PLAN_TEXTS = 500.0  # issue #11: engine alone, in the plan the service runs
TARGET_HTTP_500_RPS = 450.0  # issue #11: HTTP at 500 users, defaults
TARGET_ONE_USER_P50_MS = 6.0  # issue #11
# Issue #12: ours ÷ the `--pair` variant (the one-thread layout), median over rounds, at least
# this under load: "no worse within noise", with the noise the same run measures beside it.
PAIR_TOLERANCE = 0.03


def _ints(value: str) -> list[int]:
    try:
        out = [int(part) for part in value.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}"
        ) from exc
    if not out or any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {value!r}")
    return out


def _cpu_ids(value: str) -> list[int]:
    try:
        out = [int(part) for part in value.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected CPU ids like 0,1, got {value!r}") from exc
    if not out or any(v < 0 for v in out):
        raise argparse.ArgumentTypeError(f"expected CPU ids like 0,1, got {value!r}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--bundle", type=Path, required=True, help="the shipped bundle (int8 model.onnx)"
    )
    p.add_argument("--data", type=Path, default=None, help="data folder; built-in sample if absent")
    p.add_argument(
        "--fp32-model",
        type=Path,
        default=Path("runs/binary/onnx/model.fp32.fused.onnx"),
        help="fused fp32 graph for the fp32-vs-int8 column (skipped if absent); "
        "export writes it with --keep-intermediate runs/binary/onnx",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=Path("runs/binary/model"),
        help="TF checkpoint for the seed-architecture peer (skipped if absent)",
    )
    p.add_argument(
        "--optimum-model",
        type=Path,
        default=None,
        help="ONNX graph for the optimum peer (default: the un-fused fp32 graph "
        "model.fp32.rewritten.onnx beside --fp32-model, the closest to an optimum export; "
        "else --fp32-model; else the bundle's int8 model)",
    )
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--quick", action="store_true", help="small grid, short levels (development)")
    p.add_argument("--skip-engine", action="store_true")
    p.add_argument("--skip-http", action="store_true")
    p.add_argument("--skip-peers", action="store_true")
    p.add_argument(
        "--levels", type=_ints, default=None, help="concurrency levels (default 1,8,64,500)"
    )
    p.add_argument(
        "--duration", type=float, default=None, help="seconds measured per level (default 20)"
    )
    p.add_argument(
        "--warmup", type=float, default=None, help="seconds of warm-up per level (default 5)"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="client timeout per request (s)")
    p.add_argument(
        "--reference",
        default="ours",
        help="the server peers are compared with (default: ours; for older raw results: "
        "ours-direct or ours-batched)",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: recompute ratios and targets of this raw result (e.g. with another"
        " --reference) and rewrite its JSON, Markdown and plots",
    )
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the service (repeatable), e.g. SENTIMENT_THREADS=2",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help="sent as `Authorization: Bearer KEY` (also set as SENTIMENT_API_KEY)",
    )
    p.add_argument(
        "--server-cpus",
        type=_cpu_ids,
        default=None,
        help="pin servers to these CPU ids, e.g. 0,1 (default: no pinning, the OS schedules)",
    )
    p.add_argument(
        "--client-cpus",
        type=_cpu_ids,
        default=None,
        help="pin the load generator (this process) to these CPU ids (default: no pinning)",
    )
    p.add_argument(
        "--py-spy",
        choices=["ours", "all", "none"],
        default="ours",
        help="after the measured levels, one extra uncounted top-level run sampled by py-spy: "
        "for ours (default), every server, or none",
    )
    p.add_argument(
        "--pair",
        default="SENTIMENT_IDLE_THREADS=1",
        metavar="KEY=VALUE|none",
        help="measure ours beside ours with this setting, in turns on both servers at once "
        "(default: the one-thread layout, without the idle path); none: ours alone",
    )
    p.add_argument("--batches", type=_ints, default=None, help="engine batch sizes")
    p.add_argument("--seq-lens", type=_ints, default=None, help="engine sequence lengths")
    p.add_argument("--threads", type=_ints, default=None, help="engine intra-op thread counts")
    p.add_argument("--texts", type=int, default=2000, help="how many tweets to send")
    args = p.parse_args(argv)
    if args.quick:
        defaults: dict[str, Any] = {
            "levels": [1, 8, 64],
            "duration": 2.0,
            "warmup": 0.5,
            "batches": [1, 8, 32],
            "seq_lens": [16, 64],
            "threads": [2],
        }
    else:
        defaults = {
            "levels": [1, 8, 64, 500],
            "duration": 20.0,
            "warmup": 5.0,
            "batches": [1, 2, 4, 8, 16, 32],
            "seq_lens": [16, 32, 64, 128],
            "threads": [1, 2],
        }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.pair != "none" and "=" not in args.pair:
        p.error(f"--pair expects KEY=VALUE or none, got {args.pair!r}")
    for item in args.service_env:
        if "=" not in item:
            p.error(f"--service-env expects KEY=VALUE, got {item!r}")
    return args


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
    print("real texts:")
    n = 64 if args.quick else 512
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
    plans = []
    for max_batch in sorted({1, defaults.max_batch}):
        row = limit.service_plan(
            bundle,
            texts[:n],
            None if entities is None else entities[:n],
            defaults,
            max_batch,
            0.3 if args.quick else 3.0,
        )
        plans.append(row)
        print(f"  max_batch {max_batch:>2}: {row['texts_per_s']:8.1f} texts/s ({row})")
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
        "real_texts": real,
        "service_plan": plans,
        "profile": profile,
    }


def run_http(
    args: argparse.Namespace, bundle: Any, texts: list[str], entities: list[str] | None
) -> dict[str, Any]:
    notes: list[str] = []
    servers: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    common = dict(
        levels=args.levels,
        warmup=args.warmup,
        duration=args.duration,
        timeout=args.timeout,
        cpus=args.server_cpus,
    )
    peer_common = {**common, "profile": args.py_spy == "all"}
    port = free_port()
    extra_env = dict(item.split("=", 1) for item in args.service_env)
    if importlib.util.find_spec("service.__main__") is None:
        notes.append("our service skipped: `python -m service` does not exist in this tree yet")
    else:
        # The defaults a user gets (access log on, info level); --service-env changes them,
        # and the report's settings line says so.
        env = {
            "SENTIMENT_BUNDLE": str(bundle.path),
            "SENTIMENT_HOST": "127.0.0.1",
            "SENTIMENT_PORT": str(port),
            **extra_env,
        }
        if args.api_key:
            env.setdefault("SENTIMENT_API_KEY", args.api_key)
        if args.pair == "none":
            print("http: ours")
            servers.append(
                {
                    **http.bench_server(
                        "ours",
                        http.python_module("service"),
                        env,
                        port,
                        texts,
                        headers=headers,
                        entities=entities,
                        profile=args.py_spy in ("all", "ours"),
                        **common,
                    ),
                    "ours": True,
                }
            )
        else:
            servers += run_pair(args, env, texts, entities, headers, notes)
    if not args.skip_peers:
        servers += run_peers(args, bundle, texts, port, peer_common, notes)
    for note in notes:
        print(f"  note: {note}")
    return {"servers": servers, "notes": notes}


def run_pair(
    args: argparse.Namespace,
    env: dict[str, str],
    texts: list[str],
    entities: list[str] | None,
    headers: dict[str, str] | None,
    notes: list[str],
) -> list[dict[str, Any]]:
    """Ours and ours with `--pair` set, measured in turns (benchmarks/paired.py)."""
    key, _, value = args.pair.partition("=")
    ports = (int(env["SENTIMENT_PORT"]), free_port(avoid=int(env["SENTIMENT_PORT"])))
    configs = (
        paired.Config("ours", env),
        paired.Config(f"ours, {args.pair}", {**env, key: value, "SENTIMENT_PORT": str(ports[1])}),
    )
    print(f"http: ours and ours with {args.pair}, in turns")
    argv = http.python_module("service")
    try:
        rows = paired.bench_pair(
            argv, configs, ports, texts, args.levels, args.warmup, args.duration, args.timeout,
            headers=headers, entities=entities, cpus=args.server_cpus,
            rounds=2 if args.quick else paired.ROUNDS,
        )  # fmt: skip
    except http.ServerError as exc:
        notes.append(f"our service skipped: it failed to start: {exc}")
        return []
    if args.py_spy in ("all", "ours") and args.levels:
        requests = http.build_requests(
            texts, "127.0.0.1", ports[0], headers=headers, entities=entities
        )
        rows[0]["py_spy"] = http.profile_run(
            "ours", argv, env, ports[0], requests, max(args.levels), args.warmup, args.duration,
            args.timeout, args.server_cpus, 180.0,
        )  # fmt: skip
    return [{**row, "ours": True} for row in rows]


def run_peers(
    args: argparse.Namespace,
    bundle: Any,
    texts: list[str],
    port: int,
    common: dict[str, Any],
    notes: list[str],
) -> list[dict[str, Any]]:
    servers: list[dict[str, Any]] = []
    if not (args.checkpoint / "tf_model.h5").is_file():
        notes.append(f"seed-TF peer skipped: no TF checkpoint at {args.checkpoint}")
    elif importlib.util.find_spec("tensorflow") is None:
        notes.append("seed-TF peer skipped: tensorflow is not installed (the `train` extra)")
    else:
        print("http: peer seed-tf")
        argv = http.python_module(
            "benchmarks.peers.seed_tf", "--checkpoint", str(args.checkpoint), "--port", str(port)
        )
        servers.append(
            {
                **http.bench_server("seed-tf", argv, {}, port, texts, **common),
                "what": "TF DistilBERT checkpoint, eager call per request in an async handler",
            }
        )
    missing = peer_deps_missing()
    onnx_model = args.optimum_model or optimum_default(args.fp32_model, bundle.model_path)
    if missing:
        notes.append(f"optimum peer skipped: {missing}")
    elif not onnx_model.is_file():
        notes.append(f"optimum peer skipped: {onnx_model} not found")
    else:
        folder = Path(tempfile.mkdtemp(prefix="bench-optimum-"))
        checkpoint = args.checkpoint if args.checkpoint.is_dir() else None
        prepare_model_dir(
            onnx_model, bundle.tokenizer_path, list(bundle.labels), checkpoint, folder
        )
        print(f"http: peer optimum-ort ({onnx_model})")
        what = f"optimum ORTModelForSequenceClassification + pipeline on {onnx_model}"
        servers.append(optimum_server("optimum-ort", folder, what, bundle, texts, port, common))
        servers += run_optimized_peer(folder, bundle, texts, port, common, notes)
    return servers


def optimum_server(
    name: str,
    model_dir: Path,
    what: str,
    bundle: Any,
    texts: list[str],
    port: int,
    common: dict[str, Any],
) -> dict[str, Any]:
    """One optimum peer (benchmarks.peers.optimum_ort) on `model_dir`, measured."""
    argv = http.python_module(
        "benchmarks.peers.optimum_ort",
        "--model-dir",
        str(model_dir),
        "--max-length",
        str(bundle.max_length),
        "--port",
        str(port),
    )
    return {**http.bench_server(name, argv, {}, port, texts, **common), "what": what}


def run_optimized_peer(
    folder: Path,
    bundle: Any,
    texts: list[str],
    port: int,
    common: dict[str, Any],
    notes: list[str],
) -> list[dict[str, Any]]:
    """The strongest peer: the same graph through optimum's ORTOptimizer (O3) and ORTQuantizer
    (AVX-512 VNNI dynamic int8), behind the same handler as the plain optimum peer."""
    out = folder.with_name(folder.name + "-o3-int8")
    try:
        recipe = optimize_and_quantize(folder, out, level="O3")
    except Exception as exc:  # a peer that cannot be built is a skipped row, not a dead run
        notes.append(f"optimum O3 + int8 peer skipped: building it failed: {exc}")
        return []
    print(f"http: peer optimum-o3-int8 ({recipe['ops']})")
    what = (
        "optimum ORTOptimizer O3 + ORTQuantizer avx512_vnni dynamic int8 "
        f"(per-channel) of the same graph, ORTModel + pipeline; ops {recipe['ops']}"
    )
    return [optimum_server("optimum-o3-int8", out, what, bundle, texts, port, common)]


def optimum_default(fp32_model: Path, int8_model: Path) -> Path:
    """The graph a user's optimum export would resemble most: fp32 and not fused on disk
    (ORT applies its own runtime optimizations at session start, as it would for them)."""
    for candidate in (fp32_model.with_name("model.fp32.rewritten.onnx"), fp32_model):
        if candidate.is_file():
            return candidate
    return int8_model


def compare(results: dict[str, Any], reference: str) -> None:
    """Add each server's RPS and p99 as ratios to ours (`reference`) at the same level."""
    servers = results.get("http", {}).get("servers", [])
    ours = next((s for s in servers if s["name"] == reference and s.get("levels")), None)
    if ours is None:
        return
    by_level = {lvl["concurrency"]: lvl for lvl in ours["levels"]}
    for server in servers:
        for lvl in server.get("levels", []):
            mine = by_level.get(lvl["concurrency"])
            if mine is None:
                continue
            lvl["rps_vs_ours"] = round(lvl["rps"] / mine["rps"], 4) if mine["rps"] else None
            lvl["speedup_of_ours"] = round(mine["rps"] / lvl["rps"], 2) if lvl["rps"] else None
            if lvl["p99_ms"] and mine["p99_ms"]:
                lvl["p99_vs_ours"] = round(lvl["p99_ms"] / mine["p99_ms"], 2)


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


def targets(results: dict[str, Any], reference: str) -> list[dict[str, Any]]:
    """The issue's three targets, each with its measured value and met / missed / not measured."""
    servers = {s["name"]: s for s in results.get("http", {}).get("servers", []) if s.get("levels")}
    ours = servers.get(reference)
    top = max(ours["levels"], key=lambda lvl: lvl["concurrency"]) if ours else None
    out: list[dict[str, Any]] = []
    if top is not None:
        out.append(
            {
                "name": f"RPS at {top['concurrency']} concurrent ({reference}), 0 failures",
                "value": top["rps"],
                "target": f">= {TARGET_RPS:.0f} and 0 errors",
                "met": bool(
                    top["rps"] >= TARGET_RPS and top["errors"] == 0 and top["concurrency"] >= 500
                ),
                "detail": f"errors {top['errors']}, p99 {top['p99_ms']} ms"
                + (f", warm-up errors {top['warmup_errors']}" if top.get("warmup_errors") else "")
                + ("" if top["concurrency"] >= 500 else "; level 500 not run"),
            }
        )
    else:
        out.append(
            {"name": "RPS at 500 concurrent", "value": None, "target": ">= 250", "met": None}
        )
    real = results.get("engine", {}).get("real_texts", [])
    ceiling = max((r["texts_per_s"] for r in real), default=None)
    if top is not None and ceiling:
        ratio = top["rps"] / ceiling
        out.append(
            {
                "name": "HTTP RPS / engine-alone texts/s (best real-text batch)",
                "value": round(ratio, 3),
                "target": f">= {TARGET_HTTP_VS_ENGINE}",
                "met": ratio >= TARGET_HTTP_VS_ENGINE,
                "detail": f"{top['rps']} rps vs {ceiling} texts/s",
            }
        )
    else:
        out.append(
            {
                "name": "HTTP / engine-alone throughput",
                "value": None,
                "target": f">= {TARGET_HTTP_VS_ENGINE}",
                "met": None,
            }
        )
    seed = servers.get("seed-tf")
    seed_top = (
        next(
            (lvl for lvl in seed["levels"] if top and lvl["concurrency"] == top["concurrency"]),
            None,
        )
        if seed
        else None
    )
    if top is not None and seed_top is not None:
        speedup = top["rps"] / seed_top["rps"] if seed_top["rps"] else float("inf")
        out.append(
            {
                "name": f"ours ÷ seed-TF RPS at {top['concurrency']}",
                "value": round(speedup, 2) if seed_top["rps"] else None,
                "target": f">= {TARGET_SPEEDUP_VS_SEED:.0f}",
                "met": speedup >= TARGET_SPEEDUP_VS_SEED,
                "detail": f"seed {seed_top['rps']} rps, {seed_top['errors']} errors",
            }
        )
    else:
        out.append(
            {
                "name": "ours ÷ seed-TF RPS",
                "value": None,
                "target": f">= {TARGET_SPEEDUP_VS_SEED:.0f}",
                "met": None,
            }
        )
    return out + issue11_targets(results, ours, top) + idle_path_targets(servers, ours)


def issue11_targets(
    results: dict[str, Any], ours: dict[str, Any] | None, top: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Issue #11's: the engine in the service's plan for one-tweet requests (one text per run;
    the best plan on older results), HTTP at 500 users, one user's p50."""
    plans = results.get("engine", {}).get("service_plan", [])
    single = [p for p in plans if p["max_batch"] == 1]
    best = single[0] if single else max(plans, key=lambda p: p["texts_per_s"], default=None)
    one = next((lvl for lvl in ours["levels"] if lvl["concurrency"] == 1), None) if ours else None
    plan_value: float | None = best["texts_per_s"] if best else None
    at_500 = top is not None and top["concurrency"] >= 500
    http_value: float | None = top["rps"] if top is not None and at_500 else None
    http_errors = top["errors"] if top is not None else 0
    rows: list[tuple[str, float | None, float, str]] = [
        (
            "engine alone in the service's plan (texts/s)",
            plan_value,
            TARGET_PLAN_TEXTS,
            f"max_batch {best['max_batch']}, {best['mean_rows_per_batch']} rows per run"
            if best
            else "",
        ),
        (
            "HTTP RPS at 500 users, 0 errors",
            http_value,
            TARGET_HTTP_500_RPS,
            f"errors {top['errors']} at {top['concurrency']}" if top else "",
        ),
    ]
    out = [
        {
            "name": name,
            "value": value,
            "target": f">= {goal:g}",
            "met": None if value is None else value >= goal,
            "detail": detail,
        }
        for name, value, goal, detail in rows
    ]
    if out[1]["met"] and http_errors:
        out[1]["met"] = False  # fast but not clean
    out.append(
        {
            "name": "one user p50 (ms)",
            "value": one and one["p50_ms"],
            "target": f"<= {TARGET_ONE_USER_P50_MS:g}",
            "met": None if one is None else one["p50_ms"] <= TARGET_ONE_USER_P50_MS,
            "detail": "",
        }
    )
    return out


def idle_path_targets(
    servers: dict[str, dict[str, Any]], ours: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Issue #12's: one user's p50 against the best peer's, and ours against the variant
    without the idle path (measured in turns) at every level above one user."""
    if ours is None:
        return []
    one = next((lvl for lvl in ours["levels"] if lvl["concurrency"] == 1), None)
    peers = [
        (lvl["p50_ms"], name)
        for name, server in servers.items()
        if not server.get("ours")
        for lvl in server["levels"]
        if lvl["concurrency"] == 1 and lvl["p50_ms"] and not lvl["errors"]
    ]
    best = min(peers, default=None)
    out = [
        {
            "name": "one user p50 (ms) vs the best peer's",
            "value": one and one["p50_ms"],
            "target": f"<= {best[0]} ({best[1]})" if best else "<= the best peer's",
            "met": None if one is None or best is None else one["p50_ms"] <= best[0],
            "detail": "" if best else "no peer measured at one user",
        }
    ]
    for name, server in servers.items():
        for lvl in server["levels"]:
            ratios = lvl.get("ours_vs_this_by_round")
            if ratios is None or lvl["concurrency"] == 1 or "rps_median" not in ratios:
                continue
            out.append(
                {
                    "name": f"ours ÷ {name} RPS at {lvl['concurrency']} users (in turns)",
                    "value": ratios["rps_median"],
                    "target": f">= {1 - PAIR_TOLERANCE:g}",
                    "met": ratios["rps_median"] >= 1 - PAIR_TOLERANCE,
                    "detail": f"median of {len(lvl['rounds'])} rounds, range "
                    f"{ratios['rps_min']}–{ratios['rps_max']}",
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        raw: dict[str, Any] = json.loads(args.from_json.read_text())
        raw["settings"]["reference"] = args.reference
        if "http" in raw:
            compare(raw, args.reference)
        raw["targets"] = targets(raw, args.reference)
        return write_reports(raw, args.from_json.with_suffix(""))
    bundle = load_bundle(args.bundle)
    info = machine_info()
    print(describe(info))
    tweets, source = load_tweets(args.data, limit=args.texts)
    texts = [t.text for t in tweets]
    # An entity-pair model gets each tweet's entity (the peers, text-only by design, do not).
    entities = [t.entity for t in tweets] if bundle.text_pair else None
    print(f"texts: {source}" + (" (with entities)" if entities else ""))
    started = dt.datetime.now(dt.UTC)
    run_id = f"{started:%Y-%m-%d}-{info['host']}" + ("-quick" if args.quick else "")
    results: dict[str, Any] = {
        "schema": 1,
        "run_id": run_id,
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": info,
        "bundle": {
            "path": str(bundle.path),
            "model_name": bundle.model_name,
            "max_length": bundle.max_length,
            "text_pair": bundle.text_pair,
            "labels": list(bundle.labels),
            "sha256": bundle.sha256,
        },
        "texts": {"source": source, "count": len(texts), "entities": entities is not None},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    t0 = time.perf_counter()
    if not args.skip_engine:
        results["engine"] = run_engine(args, bundle, texts, entities)
    if not args.skip_http:
        me = psutil.Process()
        before = me.cpu_affinity()
        if args.client_cpus:
            me.cpu_affinity(args.client_cpus)
        try:
            results["http"] = run_http(args, bundle, texts, entities)
        finally:
            me.cpu_affinity(before)
        results["http"]["pinning"] = {"server": args.server_cpus, "client": args.client_cpus}
        compare(results, args.reference)
    if not args.skip_engine:
        results["limit"] = distance(results, bundle, texts, entities, args.reference)
    results["targets"] = targets(results, args.reference)
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    results["machine"]["busy_processes_at_end"] = busy_processes()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    return write_reports(results, args.out_dir / run_id)


def write_reports(results: dict[str, Any], prefix: Path) -> int:
    prefix.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    text = report.markdown(results)
    prefix.with_suffix(".md").write_text(text)
    pngs = report.plots(results, prefix)
    print()
    print(text)
    print(
        "wrote",
        ", ".join(str(p) for p in [prefix.with_suffix(".json"), prefix.with_suffix(".md"), *pngs]),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
