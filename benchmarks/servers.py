"""The HTTP part of `python -m benchmarks`: which servers run (ours alone or beside its `--pair`
variant, then the peers that can be built here), each started, measured and stopped through
http.py and paired.py; a server that cannot run is a note, not a failed run."""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import http, paired
from benchmarks.client import build_requests
from benchmarks.peers.optimum_ort import (
    optimize_and_quantize,
    peer_deps_missing,
    prepare_model_dir,
)
from benchmarks.ports import free_port
from benchmarks.server_process import ServerError, python_module


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
                        python_module("service"),
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
    argv = python_module("service")
    try:
        rows = paired.bench_pair(
            argv, configs, ports, texts, args.levels, args.warmup, args.duration, args.timeout,
            headers=headers, entities=entities, cpus=args.server_cpus,
            rounds=2 if args.quick else paired.ROUNDS,
        )  # fmt: skip
    except ServerError as exc:
        notes.append(f"our service skipped: it failed to start: {exc}")
        return []
    if args.py_spy in ("all", "ours") and args.levels:
        requests = build_requests(texts, "127.0.0.1", ports[0], headers=headers, entities=entities)
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
        argv = python_module(
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
    argv = python_module(
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
