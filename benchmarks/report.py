"""Turn a results dict into the Markdown report (no measuring here; the plots: plots.py)."""

from __future__ import annotations

from typing import Any

from benchmarks import floor
from benchmarks.stages import STAGES
from benchmarks.targets import plan_readings


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


# Report header -> result key, for the tables that show records as they are.
GRID_COLUMNS = {
    "precision": "precision", "threads": "threads", "batch": "batch", "seq len": "seq_len",
    "p50 ms": "p50_ms", "p95 ms": "p95_ms", "p99 ms": "p99_ms", "runs": "n", "seq/s": "seq_per_s",
}  # fmt: skip
REAL_TEXT_COLUMNS = {
    "order": "order", "batch": "batch", "threads": "threads", "texts/s": "texts_per_s",
    "batch p50 ms": "batch_p50_ms", "batch p99 ms": "batch_p99_ms",
}  # fmt: skip
LEVEL_COLUMNS = {
    "concurrency": "concurrency", "RPS": "rps", "p50 ms": "p50_ms", "p95 ms": "p95_ms",
    "p99 ms": "p99_ms", "errors": "errors", "ours ÷ this (RPS)": "speedup_of_ours",
    "server CPU cores": "server_cpu_cores", "client CPU cores": "client_cpu_cores",
    "client µs/req": "client_cpu_us_per_request",
}  # fmt: skip


def _records(records: list[dict[str, Any]], columns: dict[str, str]) -> list[str]:
    """A table with a row per record and a column per (header, key) of `columns`."""
    return _table(list(columns), [[r[key] for key in columns.values()] for r in records])


def engine_section(engine: dict[str, Any]) -> list[str]:
    """The engine alone: its notes, the grid (with int8 over fp32), the tokenizer, the real
    texts end to end and ORT's profile, each where it ran."""
    lines = ["## Engine alone (no HTTP)", ""]
    for note in engine.get("notes", []):
        lines.append(f"- {note}")
    if engine.get("notes"):
        lines.append("")
    lines += _grid_tables(engine.get("grid", []))
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
        lines += _records(real, REAL_TEXT_COLUMNS)
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


def _grid_tables(grid: list[dict[str, Any]]) -> list[str]:
    """Full batches per `session.run`, and int8's speed-up over fp32 where both ran."""
    if not grid:
        return []
    lines = [
        "Full batches of real token ids (no padding): latency per `session.run` and sequences/s.",
        "",
        *_records(grid, GRID_COLUMNS),
    ]
    speedups = int8_speedups(grid)
    if speedups:
        lines += ["int8 speed-up over fp32 (ratio of seq/s, same case):", ""]
        lines += _table(
            ["threads", "batch", "seq len", "int8 / fp32"],
            [[s["threads"], s["batch"], s["seq_len"], round(s["speedup"], 2)] for s in speedups],
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
    """Every server's levels, the pair, where the time went (py-spy), and why a server was
    skipped."""
    servers = results.get("http", {}).get("servers", [])
    if not servers:
        return []
    lines = ["## HTTP, closed loop on loopback", ""]
    for note in results["http"].get("notes", []):
        lines.append(f"- {note}")
    for server in servers:
        if server.get("built_from"):
            lines.append(f"- {server['name']} built from: {server['built_from']}")
    lines.append("")
    rows = []
    for server in servers:
        rows += [[server["name"], *_level_cells(lvl)] for lvl in server.get("levels", [])]
        if server.get("skipped"):
            rows.append([server["name"], "skipped", *[None] * 9])
    lines += _table(["server", *LEVEL_COLUMNS], rows)
    lines += pair_section(servers)
    for server in servers:
        lines += py_spy_section(server) + stages_section(server)
    return lines + _skipped(servers)


def _skipped(servers: list[dict[str, Any]]) -> list[str]:
    """Why a server stopped short (its last lines of output), one bullet each."""
    lines = []
    for server in (s for s in servers if s.get("skipped")):
        reason = " / ".join(line.strip() for line in server["skipped"].splitlines()[-3:])
        done = f" after {len(server['levels'])} level(s)" if server.get("levels") else ""
        lines.append(f"- {server['name']} skipped{done}: {reason[-600:]}")
    return [*lines, ""] if lines else []


def _level_cells(lvl: dict[str, Any]) -> list[Any]:
    """One level's cells in LEVEL_COLUMNS' order (the ratio is absent where the reference
    server did not run that level)."""
    return [lvl.get(k) if k == "speedup_of_ours" else lvl[k] for k in LEVEL_COLUMNS.values()]


def py_spy_section(server: dict[str, Any]) -> list[str]:
    """Where a server's time went in its extra py-spy run: by category and by function."""
    spy = server.get("py_spy")
    if not spy:
        return []
    if spy.get("skipped"):
        return [f"- py-spy for {server['name']}: skipped ({spy['skipped']})", ""]
    lines = [
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
    return lines


STAGE_RUNS = ("py_spy_one_user", "py_spy_gil_one_user", "py_spy", "py_spy_gil")


def stages_section(server: dict[str, Any]) -> list[str]:
    """Issue #23: a server's core time per request by stage, at one user and at the top level
    (its extra py-spy runs, benchmarks/stages.py), sampled two ways, beside the OS's totals for
    the same window."""
    runs = [r for r in map(server.get, STAGE_RUNS) if r and "stages" in r]
    if not runs:
        return []
    users = " and ".join(sorted({str(r["level"]) for r in runs}, key=int))
    by_run = [r["stages"] for r in runs]

    def cells(pick: Any) -> list[str]:
        return [f"{_fmt(part['us'])} ({part['samples']})" for part in map(pick, by_run)]

    rows = [[name, *cells(lambda st, i=i: st["stages"][i])] for i, name in enumerate(STAGES)]
    rows += [
        ["**outside inference (sum)**", *cells(lambda st: st["outside_inference"])],
        ["inference (session.run)", *cells(lambda st: st["inference"])],
        ["server CPU, every thread (psutil)", *(_fmt(st["cpu_us"]) for st in by_run)],
        ["event loop thread's CPU (psutil, main thread)",
         *(_fmt(st.get("loop_cpu_us")) for st in by_run)],
        ["server threads waiting for a core (schedstat)",
         *(_fmt(st["run_queue_us"]) for st in by_run)],
        ["requests sampled (RPS × seconds)", *(_fmt(st["requests"]) for st in by_run)],
    ]  # fmt: skip
    first = by_run[0]
    lines = [
        f"### Core time per request by stage (µs), {users} users: {server['name']}",
        "",
        f"Extra, uncounted runs sampled by py-spy ({first['rate']:g} Hz, {first['seconds']:g} s):"
        " a stage's samples ÷ rate ÷ requests answered while sampling, µs (samples). In a"
        " *running* column a sample is a Python thread running or waiting for a core (py-spy's"
        " non-idle test is the OS state R), so a stage includes its run-queue wait; in a *GIL*"
        " column (`py-spy --gil`, a run of its own) a sample is the one thread holding the GIL:"
        " Python work without the waits of threads that do not hold it. Threads without Python"
        " frames (ONNX Runtime's intra-op pool, tokenizers' Rust threads) are never sampled, so"
        " the sums can miss CPU the psutil rows count. Stages by innermost frame:"
        " benchmarks/stages.py.",
        "",
        *_table(["stage", *(_run_name(r) for r in runs)], rows),
    ]
    warned = [f"- py-spy at {r['level']} users: {w}" for r in runs for w in r.get("warnings", [])]
    return lines + ([*warned, ""] if warned else [])


def _run_name(run: dict[str, Any]) -> str:
    level = run["level"]
    return f"{level} user{'s' * (level != 1)}, {'GIL' if run.get('gil') else 'running'}"


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
        spare = f" / {runs['spare']}" if runs.get("spare") else ""
        return f"{runs.get('alone', 0)} / {runs.get('loaded', 0)}{spare}"

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
        "inference runs by path (alone: the idle session / loaded: one thread / spare: a spare "
        "thread, when any) in those rounds.",
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


def workloads_section(results: dict[str, Any]) -> list[str]:
    """Every workload's texts, its engine alone and ours over HTTP, and HTTP ÷ engine alone
    (`targets.http_vs_engine`, stored by `results.compare`); a further workload's HTTP levels."""
    workloads = results.get("workloads", {})
    runs = workloads.get("runs", [])
    if not runs:
        return []
    lines = [
        "## Workloads: HTTP ÷ engine alone",
        "",
        "Ours over HTTP at the top level ÷ the engine alone on each workload's own texts: the"
        " engine-alone ceiling (best real-text batch) and the service's plan for one-text"
        " requests (one text per run, the sessions the service runs; issue #23's ratio), the"
        " latter measured before and again right after our HTTP levels (the VM's speed drifts"
        " within minutes) and the ratio taken to their mean. The first workload also ran"
        " everything else in this report.",
        "",
    ]
    notes = [f"- {note}" for note in workloads.get("notes", [])]
    lines += [*notes, ""] if notes else []
    lines += _table(
        [
            "workload", "texts", "entities", "engine, service plan (texts/s; before / after HTTP)",
            "engine-alone ceiling (texts/s)", "ours HTTP RPS", "HTTP ÷ ceiling", "HTTP ÷ plan",
        ],
        [_workload_row(results if i == 0 else run, run) for i, run in enumerate(runs)],
    )  # fmt: skip
    for run in runs[1:]:
        servers = run.get("http", {}).get("servers", [])
        for server in (s for s in servers if s.get("levels")):
            lines += [f"{server['name']} on the {run['workload']} workload:", ""]
            lines += _table(
                ["server", *LEVEL_COLUMNS],
                [[server["name"], *_level_cells(lvl)] for lvl in server["levels"]],
            )
        lines += _skipped(servers)
    return lines


def _workload_row(part: dict[str, Any], run: dict[str, Any]) -> list[Any]:
    """One workload's cells: its texts, the engine in the service's plan (one text per run) from
    its `part` (the run's own parts for the first workload), and its HTTP ÷ engine alone."""
    readings = plan_readings(part.get("engine", {}))
    single = " / ".join(map(_fmt, readings)) or None
    ratio = run.get("http_vs_engine")
    http = ratio and f"{ratio['http_rps']} (c={ratio['concurrency']}, errors {ratio['errors']})"
    return [
        run["workload"], run["source"], "yes" if run["entities"] else "no", single,
        ratio and ratio["engine_texts_per_s"], http, ratio and ratio["ratio"],
        ratio and ratio.get("ratio_to_plan"),
    ]  # fmt: skip


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
    further = results.get("workloads", {}).get("runs", [])[1:]
    busy_levels = [
        f"{server['name']} c={lvl['concurrency']}" + (f" ({name})" if name else "")
        for name, part in [("", results), *((run["workload"], run) for run in further)]
        for server in part.get("http", {}).get("servers", [])
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
    lines += workloads_section(results)
    lines += floor.section(results)
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
