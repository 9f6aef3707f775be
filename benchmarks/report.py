"""Turn a results dict into the Markdown report and the PNG plots (no measuring here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    """Numbers as a reader wants them: 3 significant digits when small, grouped thousands."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if isinstance(value, int):
        return str(value)
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def engine_section(engine: dict[str, Any]) -> list[str]:
    lines = ["## Engine alone (no HTTP)", ""]
    for note in engine.get("notes", []):
        lines.append(f"- {note}")
    if engine.get("notes"):
        lines.append("")
    grid = engine.get("grid", [])
    if grid:
        lines += [
            "Full batches of real token ids (no padding): latency per `session.run` and sequences/s.",
            "",
        ]
        rows = [
            [
                r["precision"],
                r["threads"],
                r["batch"],
                r["seq_len"],
                r["p50_ms"],
                r["p95_ms"],
                r["p99_ms"],
                r["n"],
                r["seq_per_s"],
            ]
            for r in grid
        ]
        lines += _table(
            [
                "precision",
                "threads",
                "batch",
                "seq len",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "runs",
                "seq/s",
            ],
            rows,
        )
        speedups = int8_speedups(grid)
        if speedups:
            lines += ["int8 speed-up over fp32 (ratio of seq/s, same case):", ""]
            lines += _table(
                ["threads", "batch", "seq len", "int8 / fp32"],
                [
                    [s["threads"], s["batch"], s["seq_len"], round(s["speedup"], 2)]
                    for s in speedups
                ],
            )
    tok = engine.get("tokenizer")
    if tok:
        lines += [
            f"Tokenizer: {tok['encode_us_per_text']} µs per text one at a time, "
            f"{tok['encode_batch_us_per_text']} µs per text in `encode_batch` ({tok['texts']} texts; "
            f"tokens p50 {tok['tokens_p50']:.0f}, p95 {tok['tokens_p95']:.0f}, max {tok['tokens_max']}).",
            "",
        ]
    real = engine.get("real_texts", [])
    if real:
        lines += ["Real texts end to end (tokenize + pad to the batch's longest + run):", ""]
        lines += _table(
            ["order", "batch", "threads", "texts/s", "batch p50 ms", "batch p99 ms"],
            [
                [
                    r["order"],
                    r["batch"],
                    r["threads"],
                    r["texts_per_s"],
                    r["batch_p50_ms"],
                    r["batch_p99_ms"],
                ]
                for r in real
            ],
        )
    profile = engine.get("profile")
    if profile:
        lines += [
            f"ORT profiler, int8, batch {profile['batch']} × {profile['seq_len']} tokens, "
            f"{profile['threads']} threads, {profile['runs']} runs: time per op type.",
            "",
        ]
        lines += _table(
            ["op type", "ms per run", "share"],
            [[op["op_type"], op["ms_per_run"], f"{op['share']:.1%}"] for op in profile["ops"][:12]],
        )
    return lines


def int8_speedups(grid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """seq/s of int8 over fp32 for every case measured in both precisions."""
    fp32 = {(r["threads"], r["batch"], r["seq_len"]): r for r in grid if r["precision"] == "fp32"}
    out = []
    for r in grid:
        key = (r["threads"], r["batch"], r["seq_len"])
        if r["precision"] == "int8" and key in fp32 and fp32[key]["seq_per_s"]:
            out.append(
                {
                    "threads": key[0],
                    "batch": key[1],
                    "seq_len": key[2],
                    "speedup": r["seq_per_s"] / fp32[key]["seq_per_s"],
                }
            )
    return out


def http_section(results: dict[str, Any]) -> list[str]:
    servers = results.get("http", {}).get("servers", [])
    if not servers:
        return []
    lines = ["## HTTP, closed loop on loopback", ""]
    for note in results["http"].get("notes", []):
        lines.append(f"- {note}")
    lines.append("")
    rows = []
    for server in servers:
        for lvl in server.get("levels", []):
            rows.append(
                [
                    server["name"],
                    lvl["concurrency"],
                    lvl["rps"],
                    lvl["p50_ms"],
                    lvl["p95_ms"],
                    lvl["p99_ms"],
                    lvl["errors"],
                    lvl.get("speedup_of_ours"),
                    lvl["server_cpu_cores"],
                    lvl["client_cpu_cores"],
                    lvl["client_cpu_us_per_request"],
                ]
            )
        if server.get("skipped"):
            rows.append([server["name"], "skipped", *[None] * 9])
    lines += _table(
        [
            "server",
            "concurrency",
            "RPS",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "errors",
            "ours ÷ this (RPS)",
            "server CPU cores",
            "client CPU cores",
            "client µs/req",
        ],
        rows,
    )
    lines += pair_section(servers)
    for server in servers:
        spy = server.get("py_spy")
        if not spy:
            continue
        if spy.get("skipped"):
            lines += [f"- py-spy for {server['name']}: skipped ({spy['skipped']})", ""]
            continue
        lines += [
            f"Where {server['name']}'s time goes at concurrency {spy['level']} (py-spy, "
            f"{spy['samples']} samples in an extra run at {spy['rps_while_sampled']} rps, not counted above):",
            "",
        ]
        lines += _table(
            ["category", "share of samples"],
            [[c["category"], f"{c['share']:.1%}"] for c in spy["categories"]],
        )
        lines += _table(
            ["function (self time)", "share"],
            [[f"`{f['function']}`", f"{f['share']:.1%}"] for f in spy["top_self"][:8]],
        )
    skipped = [s for s in servers if s.get("skipped")]
    for server in skipped:
        reason = " / ".join(line.strip() for line in server["skipped"].splitlines()[-3:])
        done = f" after {len(server['levels'])} level(s)" if server.get("levels") else ""
        lines.append(f"- {server['name']} skipped{done}: {reason[-600:]}")
    if skipped:
        lines.append("")
    return lines


def pair_section(servers: list[dict[str, Any]]) -> list[str]:
    """Ours beside a variant of its settings, measured in turns (benchmarks/paired.py)."""
    ours = next((s for s in servers if s["name"] == "ours"), None)
    variant = next(
        (s for s in servers if any("ours_vs_this_by_round" in lvl for lvl in s.get("levels", []))),
        None,
    )
    if ours is None or variant is None:
        return []
    by_level = {lvl["concurrency"]: lvl for lvl in ours["levels"]}

    def spread(ratios: dict[str, float], key: str) -> str:
        if f"{key}_median" not in ratios:
            return "–"
        return (
            f"{ratios[key + '_median']:.3f} [{ratios[key + '_min']:.3f}–{ratios[key + '_max']:.3f}]"
        )

    def paths(lvl: dict[str, Any]) -> str:
        runs = lvl.get("runs_by_path", {})
        return f"{runs.get('alone', 0)} / {runs.get('loaded', 0)}"

    rows = []
    for lvl in variant["levels"]:
        mine = by_level.get(lvl["concurrency"])
        if mine is None:
            continue
        ratios = lvl["ours_vs_this_by_round"]
        rows.append(
            [
                lvl["concurrency"], mine["rps"], lvl["rps"], spread(ratios, "rps"),
                mine["p50_ms"], lvl["p50_ms"], spread(ratios, "p50"), paths(mine), paths(lvl),
            ]
        )  # fmt: skip
    rounds = len(variant["levels"][0].get("rounds", [])) if variant["levels"] else 0
    lines = [
        f"Ours beside **{variant['name']}**, both servers up and measured in turns ({rounds} "
        "rounds each per level, A B B A B A A B ...): ours ÷ it round by round, median [min–max]; "
        "inference runs by path (alone: the idle session / loaded: one thread) in those rounds.",
        "",
    ]
    return lines + _table(
        [
            "concurrency", "ours RPS", "its RPS", "ours ÷ it RPS", "ours p50 ms", "its p50 ms",
            "ours ÷ it p50", "ours runs alone / loaded", "its runs alone / loaded",
        ],
        rows,
    )  # fmt: skip


def targets_section(results: dict[str, Any]) -> list[str]:
    targets = results.get("targets", [])
    if not targets:
        return []
    lines = ["## Targets", ""]
    rows = []
    for t in targets:
        met = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        rows.append([t["name"], t["value"], t["target"], met, t.get("detail", "")])
    return lines + _table(["target", "value", "goal", "status", "detail"], rows)


def markdown(results: dict[str, Any]) -> str:
    """The human report: machine, targets, engine tables, HTTP and peer tables."""
    m = results["machine"]
    lines = [
        f"# Benchmark {results['run_id']}",
        "",
        f"- Machine: {m['cpu_model']}, {m['logical_cores']} logical / {m['physical_cores']} "
        f"physical cores, {m['memory_gb']} GB, flags {' '.join(m['cpu_flags']) or 'none'}; {m['os']}",
        f"- Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        f"- Bundle: `{results['bundle']['path']}` ({results['bundle']['model_name']}, "
        f"max_length {results['bundle']['max_length']}, sha256 {results['bundle']['sha256'][:12]}); "
        f"texts: {results['texts']['source']}",
        f"- Settings: {results['settings']}",
    ]
    busy_levels = [
        f"{server['name']} c={lvl['concurrency']}"
        for server in results.get("http", {}).get("servers", [])
        for lvl in server.get("levels", [])
        if lvl.get("other_heavy_jobs")
    ]
    if m.get("busy_processes") or m.get("busy_processes_at_end") or busy_levels:
        lines.append(
            "- WARNING: other heavy jobs (training/export) ran during this benchmark; these "
            "numbers are not clean."
            + (f" Levels affected: {', '.join(busy_levels)}." if busy_levels else "")
        )
    lines.append("")
    lines += targets_section(results)
    lines += http_section(results)
    lines += limit_section(results)
    lines += engine_section(results.get("engine", {}))
    return "\n".join(lines).rstrip() + "\n"


def limit_section(results: dict[str, Any]) -> list[str]:
    """The service's own plan without HTTP, and the distance to the CPU's int8 GEMM rate."""
    lines: list[str] = []
    plans = results.get("engine", {}).get("service_plan", [])
    if plans:
        lines += [
            "## Engine alone, in the service's plan",
            "",
            "The service's engines with its default settings (sessions x threads, spinning off),"
            " one text per run (max_batch 1: what one-tweet requests run), and requests of 64 texts"
            " cut by `service.scheduler.plan` (max_batch 16).",
            "",
        ]
        lines += _table(
            ["max_batch", "sessions x threads", "mean rows per run", "texts/s"],
            [
                [p["max_batch"], f"{p['sessions']} x {p['threads']}", p["mean_rows_per_batch"],
                 p["texts_per_s"]]
                for p in plans
            ],
        )  # fmt: skip
        lines.append("")
    lim = results.get("limit")
    if lim:
        gemm = lim["gemm"]
        lines += [
            "## Distance to the machine's int8 limit",
            "",
            f"- int8 GEMMs in the shipped graph: {lim['int8_gemms']}, "
            f"{lim['macs_per_token']:,} multiply-adds per token; mean tweet "
            f"{lim['mean_tokens']} tokens: {lim['macs_per_text'] / 1e6:.1f} M per text.",
            f"- Sustained int8 GEMM (MatMulIntegerToFloat u8 x s8, {gemm['shape']}): "
            + ", ".join(f"{k} {v} GMAC/s" for k, v in gemm["gmacs_per_s"].items())
            + ".",
            f"- {lim['source']}: {lim['texts_per_s']} texts/s = {lim['achieved_gmacs_per_s']} "
            f"GMAC/s = **{lim['fraction_of_gemm_rate']:.1%}** of the GEMM rate.",
            "",
        ]
    return lines


def _plain_log_y(ax: Any) -> None:
    """Log y axis labelled 1, 10, 100 instead of 10^0, 6x10^1, ..."""
    import matplotlib.ticker

    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def plots(results: dict[str, Any], prefix: Path) -> list[Path]:
    """latency-vs-concurrency and throughput-vs-batch PNGs next to the JSON; [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return []
    written: list[Path] = []
    servers = [s for s in results.get("http", {}).get("servers", []) if s.get("levels")]
    if servers:
        fig, (ax_lat, ax_rps) = plt.subplots(1, 2, figsize=(11, 4.2))
        ticks = sorted({lvl["concurrency"] for s in servers for lvl in s["levels"]})
        for server in servers:
            levels = [lvl for lvl in server["levels"] if lvl["p50_ms"] is not None]
            if not levels:
                continue
            x = [lvl["concurrency"] for lvl in levels]
            (line,) = ax_lat.plot(
                x, [lvl["p50_ms"] for lvl in levels], marker="o", label=f"{server['name']} p50"
            )
            ax_lat.plot(
                x,
                [lvl["p99_ms"] for lvl in levels],
                marker="x",
                linestyle="--",
                color=line.get_color(),
                label=f"{server['name']} p99",
            )
            ax_rps.plot(x, [lvl["rps"] for lvl in levels], marker="o", label=server["name"])
        for ax, title, ylabel in (
            (ax_lat, "Latency vs concurrency", "latency (ms, log)"),
            (ax_rps, "Throughput vs concurrency", "successful requests/s (log)"),
        ):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            _plain_log_y(ax)
            ax.set_xlabel("concurrent clients (closed loop)")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = prefix.with_name(prefix.name + "-latency.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    engine = results.get("engine", {})
    if engine.get("grid") or engine.get("real_texts"):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        grid = engine.get("grid", [])
        best_threads = max((r["threads"] for r in grid), default=None)
        for precision in sorted({r["precision"] for r in grid}):
            for index, seq_len in enumerate(sorted({r["seq_len"] for r in grid})):
                rows = [
                    r
                    for r in grid
                    if r["precision"] == precision
                    and r["seq_len"] == seq_len
                    and r["threads"] == best_threads
                ]
                if rows:
                    ax.plot(
                        [r["batch"] for r in rows],
                        [r["seq_per_s"] for r in rows],
                        marker="o",
                        linestyle="-" if precision == "int8" else ":",
                        color=f"C{index}",
                        label=f"{precision} L={seq_len}",
                    )
        for order in ("arrival", "length_sorted"):
            rows = [r for r in engine.get("real_texts", []) if r["order"] == order]
            if rows:
                ax.plot(
                    [r["batch"] for r in rows],
                    [r["texts_per_s"] for r in rows],
                    marker="s",
                    linewidth=2.5,
                    color="black" if order == "arrival" else "dimgray",
                    label=f"real texts ({order}), incl. tokenizer",
                )
        ax.set_xscale("log", base=2)
        batches = sorted({r["batch"] for r in [*grid, *engine.get("real_texts", [])]})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_yscale("log")
        _plain_log_y(ax)
        ax.set_xlabel("batch size")
        ax.set_ylabel("sequences/s (log)")
        ax.set_title(f"Engine throughput vs batch size ({best_threads} threads)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = prefix.with_name(prefix.name + "-throughput.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
