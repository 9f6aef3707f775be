"""The load-balancer stage's result as Markdown: one table row per scenario, and the timeline
of which version answered (the switch a rollout or a reload must show)."""

from __future__ import annotations

from typing import Any


def _s(value: Any) -> str:
    return "–" if value is None else f"{value:g} s" if isinstance(value, float) else str(value)


def failed_cell(result: dict[str, Any]) -> str:
    """failed: total (non-200 / connection errors and resets / timeouts)."""
    kinds = result.get("failed_by_kind", {})
    parts = [sum(kinds.get(k, {}).values()) for k in ("http", "connection", "timeout", "other")]
    text = f"**{result.get('failed', 0)}** ({parts[0]} / {parts[1]} / {parts[2]}"
    return text + (f" / {parts[3]} other)" if parts[3] else ")")


def timeline(series: list[dict[str, Any]], step: float) -> str:
    """Consecutive steps with the same answering versions, as `0-5 s: A; 5-7 s: A + B; ...`
    (a step with failures says how many)."""
    segments: list[tuple[int, int, str]] = []
    for i, row in enumerate(series):
        label = " + ".join(row["versions"]) or "no answer"
        if row["failed"]:
            label += f" ({row['failed']} failed)"
        if segments and segments[-1][2] == label:
            segments[-1] = (segments[-1][0], i + 1, label)
        else:
            segments.append((i, i + 1, label))
    return "; ".join(f"{a * step:g}-{b * step:g} s: {label}" for a, b, label in segments)


def _rollout(r: dict[str, Any]) -> str:
    steps = "; ".join(
        f"{s['replica']}: DOWN {_s(s['down_after_s'])} after SIGTERM, exited {_s(s['exited_after_s'])}"
        f", ready {_s(s['ready_after_s'])}, UP {_s(s['up_after_s'])}"
        for s in r.get("steps", [])
    )
    switched = "switched" if r.get("switched") else "**did not switch**"
    return (
        f"`{r.get('old_version')}` → `{r.get('new_version')}` ({switched}; last old answer at "
        f"{_s(r.get('last_old_answer_s'))}, first new at {_s(r.get('first_new_answer_s'))}). {steps}"
    )


def _reload(r: dict[str, Any]) -> str:
    if not r.get("supported"):
        return str(r.get("note", "reload not supported by this service"))
    steps = "; ".join(
        f"{s['replica']}: new version {_s(s['switched_after_s'])} after SIGHUP" for s in r["steps"]
    )
    return f"`{r.get('old_version')}` → `{r.get('new_version')}`. {steps}"


def _kill(r: dict[str, Any]) -> str:
    c = r.get("haproxy_counters", {})
    return (
        f"{r['replica']}: in flight at the kill {r.get('in_flight_at_kill_haproxy')} (HAProxy's "
        f"count); DOWN {_s(r.get('down_after_s'))} after the kill (bound: fall x inter = "
        f"{_s(r.get('down_bound_s'))}); restarted at once, ready {_s(r.get('ready_after_s'))}, "
        f"UP {_s(r.get('up_after_s'))}, answering again {_s(r.get('first_answer_after_up_s'))} "
        f"after UP; meanwhile the other replica answered "
        f"{sum(v for k, v in r.get('outage', {}).get('servers', {}).items() if k != r['replica'])}"
        f"; HAProxy re-sent {c.get('wretr', 0)} (redispatched {c.get('wredis', 0)}), "
        f"connection errors {c.get('econ', 0)}, response errors {c.get('eresp', 0)}"
    )


def _sigterm(r: dict[str, Any]) -> str:
    c = r.get("haproxy_counters", {})
    order = "in that order" if r.get("order_ok") else "**not in that order**"
    return (
        f"{r['replica']} (drain {_s(r.get('drain_delay_s'))}): /ready 503 "
        f"{_s(r.get('ready_503_after_s'))} after SIGTERM, DOWN {_s(r.get('down_after_s'))}, "
        f"listener closed {_s(r.get('listener_closed_after_s'))} ({order}), last answer "
        f"{_s(r.get('last_answer_after_s'))}, exit {r.get('exit_status')} at "
        f"{_s(r.get('exited_after_s'))}; resets seen by clients: {r.get('client_resets')}; "
        f"HAProxy for it: response errors {c.get('eresp', 0)}, aborts {c.get('srv_abrt', 0)}, "
        f"connection errors {c.get('econ', 0)}, re-sent {c.get('wretr', 0)} (redispatched "
        f"{c.get('wredis', 0)})"
    )


ROWS = {
    "a_rollout": ("(a) rolling rollout of another bundle", _rollout),
    "b_reload": ("(b) reload by SIGHUP", _reload),
    "c_kill_9": ("(c) kill -9 of one replica", _kill),
    "d_sigterm": ("(d) SIGTERM of one replica", _sigterm),
    "e_sigterm_without_drain": ("(e) control: (d) without a drain delay", _sigterm),
}


def markdown(results: dict[str, Any]) -> str:
    """The stage's report: setup, the table, and each scenario's version timeline."""
    if "skipped" in results:
        return f"# Load-balancer stage\n\nSkipped: {results['skipped']}\n"
    setup = results.get("setup", {})
    checks = setup.get("checks", {})
    lines = [
        "# Load-balancer stage",
        "",
        f"{setup.get('haproxy', 'HAProxy')} on 127.0.0.1 in front of {setup.get('replicas')} "
        f"replicas, {setup.get('connections')} closed-loop connections throughout; checks "
        f"`GET /ready` every {checks.get('inter_ms')} ms, fall {checks.get('fall')}, rise "
        f"{checks.get('rise')}; replica settings "
        + ", ".join(f"`{k}={v}`" for k, v in setup.get("replica_settings", {}).items())
        + f". {results.get('elapsed_s')} s in all.",
        "",
        "| scenario | ok | failed (non-200 / connection / timeout) | what happened |",
        "| --- | --- | --- | --- |",
    ]
    for key, (title, describe) in ROWS.items():
        if key in results:
            r = results[key]
            lines.append(f"| {title} | {r.get('ok')} | {failed_cell(r)} | {describe(r)} |")
    lines += ["", "Which version answered, by second from the scenario's start:", ""]
    for key, (title, _) in ROWS.items():
        if key in results and results[key].get("series"):
            r = results[key]
            lines.append(f"- {title}: {timeline(r['series'], r['series_step_s'])}")
    return "\n".join(lines) + "\n"
