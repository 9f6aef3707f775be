"""benchmarks/balancer_report.py: the stage's Markdown shows the failures by kind and the
version switch as time ranges."""

from __future__ import annotations

from typing import Any

from benchmarks.balancer_report import failed_cell, markdown, timeline


def row(versions: dict[str, int], failed: int = 0) -> dict[str, Any]:
    return {"ok": sum(versions.values()), "failed": failed, "versions": versions}


def test_timeline_merges_equal_steps_and_shows_failures() -> None:
    series = [row({"A": 5}), row({"A": 4}), row({"A": 2, "B": 2}, failed=1), row({"B": 5})]
    assert timeline(series, 0.5) == "0-1 s: A; 1-1.5 s: A + B (1 failed); 1.5-2 s: B"
    assert timeline([row({})], 1.0) == "0-1 s: no answer"


def test_failed_cell_splits_by_kind() -> None:
    result = {
        "failed": 4,
        "failed_by_kind": {
            "http": {"http_502": 1},
            "connection": {"conn:ConnectionResetError": 2},
            "timeout": {"timeout": 1},
        },
    }
    assert failed_cell(result) == "**4** (1 / 2 / 1)"
    assert failed_cell({"failed": 0, "failed_by_kind": {}}) == "**0** (0 / 0 / 0)"
    assert failed_cell({"failed": 1, "failed_by_kind": {"other": {"client:X": 1}}}).endswith(
        "/ 1 other)"
    )


def test_markdown_has_a_row_per_scenario_run() -> None:
    common = {"ok": 10, "failed": 0, "failed_by_kind": {}, "series_step_s": 1.0}
    result = {
        "setup": {"haproxy": "HAProxy 2.6", "replicas": 2, "connections": 200, "checks": {}},
        "a_rollout": common
        | {
            "old_version": "m[A,B]",
            "new_version": "m[A,B,C]",
            "switched": True,
            "steps": [],
            "series": [row({"m[A,B]": 5}), row({"m[A,B,C]": 5})],
        },
        "b_reload": common
        | {"supported": False, "note": "reload not supported by this service: why", "series": []},
        "elapsed_s": 1.0,
    }
    text = markdown(result)
    assert "| (a) rolling rollout of another bundle | 10 | **0** (0 / 0 / 0) |" in text
    assert "| (b) reload by SIGHUP | 10 |" in text and "not supported by this service: why" in text
    assert "(c)" not in text
    assert "- (a) rolling rollout of another bundle: 0-1 s: m[A,B]; 1-2 s: m[A,B,C]" in text
