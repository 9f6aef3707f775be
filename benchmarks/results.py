"""The raw result of `python -m benchmarks`: its header (machine, bundle, texts, settings), the
ratios of every server to ours, and the JSON, Markdown and plots written from it."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from benchmarks import plots, report
from benchmarks.targets import http_vs_engine, targets
from benchmarks.texts import Workload
from service.bundle import Bundle


def header(
    args: argparse.Namespace, bundle: Bundle, info: dict[str, Any], workload: Workload
) -> dict[str, Any]:
    """What a run measured on, before it measures anything (`texts`: the first workload's,
    which the whole run measures); `run_id` names its files."""
    started = dt.datetime.now(dt.UTC)
    run_id = f"{started:%Y-%m-%d}-{info['host']}" + ("-quick" if args.quick else "")
    return {
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
        "texts": workload_info(workload),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def workload_info(workload: Workload) -> dict[str, Any]:
    """Which texts a workload sent, as the raw result records them."""
    return {
        "workload": workload.name,
        "source": workload.source,
        "count": len(workload.texts),
        "entities": workload.entities is not None,
    }


def compare(results: dict[str, Any], reference: str) -> None:
    """Add each server's RPS and p99 as ratios to ours (`reference`) at the same level, and
    each workload's HTTP / engine-alone ratio (the first workload's parts are the run's own)."""
    for i, run in enumerate(results.get("workloads", {}).get("runs", [])):
        run["http_vs_engine"] = http_vs_engine(results if i == 0 else run, reference)
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


def write_reports(results: dict[str, Any], prefix: Path) -> int:
    prefix.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    text = report.markdown(results)
    prefix.with_suffix(".md").write_text(text)
    pngs = plots.write_plots(results, prefix)
    print()
    print(text)
    print(
        "wrote",
        ", ".join(str(p) for p in [prefix.with_suffix(".json"), prefix.with_suffix(".md"), *pngs]),
    )
    return 0


def recompute(path: Path, reference: str) -> int:
    """`--from-json`: measure nothing, recompute a raw result's ratios and targets against
    `reference` and rewrite its JSON, Markdown and plots."""
    raw: dict[str, Any] = json.loads(path.read_text())
    raw["settings"]["reference"] = reference
    compare(raw, reference)
    raw["targets"] = targets(raw, reference)
    return write_reports(raw, path.with_suffix(""))
