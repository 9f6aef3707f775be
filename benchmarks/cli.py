"""The command line of `python -m benchmarks`: its flags by topic, the full and --quick
defaults of the grid and levels, and the checks argparse cannot express."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

DESCRIPTION = """`python -m benchmarks`: engine, HTTP and peer benchmarks in one run, written as JSON + Markdown + PNG.

Example (what `make bench` runs):
    python -m benchmarks --bundle models/sentiment-3class --data ../shared/data/twitter_entity \\
        --data-root ../shared/data
Development runs: add --quick (small grid, 2 s per level; both workloads).
"""

# Flags left unset take these: the full grid, or --quick's small one.
FULL_DEFAULTS: dict[str, Any] = {
    "levels": [1, 8, 64, 500],
    "duration": 20.0,
    "warmup": 5.0,
    "batches": [1, 2, 4, 8, 16, 32],
    "seq_lens": [16, 32, 64, 128],
    "threads": [1, 2],
}
QUICK_DEFAULTS: dict[str, Any] = {
    "levels": [1, 8, 64],
    "duration": 2.0,
    "warmup": 0.5,
    "batches": [1, 8, 32],
    "seq_lens": [16, 64],
    "threads": [2],
}


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
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Added in this order so --help lists the flags as it always has.
    _add_inputs(p)
    _add_run_scope(p)
    _add_levels(p)
    _add_comparison(p)
    _add_service(p)
    _add_pinning(p)
    _add_profile_and_pair(p)
    _add_engine_grid(p)
    args = p.parse_args(argv)
    for key, value in (QUICK_DEFAULTS if args.quick else FULL_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, copy.deepcopy(value))  # the constants stay unshared
    _check(p, args)
    return args


def _add_inputs(p: argparse.ArgumentParser) -> None:
    """The models and texts measured."""
    p.add_argument(
        "--bundle", type=Path, required=True, help="the shipped bundle (int8 model.onnx)"
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="Twitter Entity data folder (the twitter-entity workload); built-in sample if absent",
    )
    p.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder holding the sources (the semeval workload reads "
        "semeval2017_task4a/twitter-2017test-A.csv there); default: the folder above --data",
    )
    p.add_argument(
        "--workload",
        choices=["twitter-entity", "semeval", "both"],
        default="both",
        help="which tweets: the Twitter Entity tweets with their entities, the SemEval-2017 test "
        "tweets (text only), or both (default; also with --quick). The first gets the whole run; "
        "the second, the engine alone and our HTTP levels, for its HTTP / engine-alone ratio",
    )
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
        help="ONNX graph for the optimum peers (default: the trained un-fused fp32 graph "
        "model.fp32.rewritten.onnx beside --fp32-model, the closest to an optimum export; "
        "else --fp32-model; else optimum's export of the packaged pretrained MiniLM weights "
        "with an untrained head: speed only)",
    )


def _add_run_scope(p: argparse.ArgumentParser) -> None:
    """Where results go, and which parts run."""
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--quick", action="store_true", help="small grid, short levels (development)")
    p.add_argument("--skip-engine", action="store_true")
    p.add_argument("--skip-http", action="store_true")
    p.add_argument("--skip-peers", action="store_true")


def _add_levels(p: argparse.ArgumentParser) -> None:
    """The HTTP closed-loop levels and their timing."""
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


def _add_comparison(p: argparse.ArgumentParser) -> None:
    """What the ratios are taken against, and recomputing an old result."""
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


def _add_service(p: argparse.ArgumentParser) -> None:
    """How our service is started and called."""
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


def _add_pinning(p: argparse.ArgumentParser) -> None:
    """CPU pinning of the servers and of the load generator."""
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


def _add_profile_and_pair(p: argparse.ArgumentParser) -> None:
    """The py-spy run after the levels, and ours beside a variant of its settings."""
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


def _add_engine_grid(p: argparse.ArgumentParser) -> None:
    """The engine grid and how many tweets are used."""
    p.add_argument("--batches", type=_ints, default=None, help="engine batch sizes")
    p.add_argument("--seq-lens", type=_ints, default=None, help="engine sequence lengths")
    p.add_argument("--threads", type=_ints, default=None, help="engine intra-op thread counts")
    p.add_argument("--texts", type=int, default=2000, help="how many tweets to send")


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """KEY=VALUE flags; an error exits with argparse's usage message."""
    if args.pair != "none" and "=" not in args.pair:
        p.error(f"--pair expects KEY=VALUE or none, got {args.pair!r}")
    for item in args.service_env:
        if "=" not in item:
            p.error(f"--service-env expects KEY=VALUE, got {item!r}")
