"""The PNG plots of a results dict, written next to its JSON (no measuring here).

Two figures: latency and RPS against concurrency for every server, and the engine's
sequences/s against batch size. Both axes are logarithmic (levels 1 to 500, rates over orders of
magnitude) but labelled in plain numbers. matplotlib is optional: without it there are no plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plots(results: dict[str, Any], prefix: Path) -> list[Path]:
    """`<prefix>-latency.png` (when a server has levels) and `<prefix>-throughput.png` (when
    the engine ran); [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot
    except ImportError:
        return []
    written: list[Path] = []
    servers = [s for s in results.get("http", {}).get("servers", []) if s.get("levels")]
    if servers:
        written.append(_latency_plot(servers, prefix.with_name(prefix.name + "-latency.png")))
    engine = results.get("engine", {})
    if engine.get("grid") or engine.get("real_texts"):
        path = prefix.with_name(prefix.name + "-throughput.png")
        written.append(_throughput_plot(engine, path))
    return written


def _latency_plot(servers: list[dict[str, Any]], path: Path) -> Path:
    """p50 and p99 (left) and successful requests/s (right) per server, by concurrency."""
    import matplotlib.pyplot as plt

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
        _plain_log_axes(ax, ticks)
        ax.set_xlabel("concurrent clients (closed loop)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def _throughput_plot(engine: dict[str, Any], path: Path) -> Path:
    """Sequences/s by batch size: the grid at its highest thread count (one line per
    precision and length), and the real texts end to end (one line per order)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    grid = engine.get("grid", [])
    real = engine.get("real_texts", [])
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
        rows = [r for r in real if r["order"] == order]
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
    ax.set_yscale("log")
    _plain_log_axes(ax, sorted({r["batch"] for r in [*grid, *real]}))
    ax.set_xlabel("batch size")
    ax.set_ylabel("sequences/s (log)")
    ax.set_title(f"Engine throughput vs batch size ({best_threads} threads)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _plain_log_axes(ax: Any, xticks: list[int]) -> None:
    """Ticks at the measured x values only, and a log y axis labelled 1, 10, 100 instead of
    10^0, 6x10^1, ..."""
    import matplotlib.ticker

    ax.set_xticks(xticks, [str(t) for t in xticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
