"""Measuring two configurations in turns: the order, the pooling and the ratios (no server:
the whole run is exercised by test_main's quick run)."""

from typing import Any

import pytest

from benchmarks import paired


@pytest.mark.parametrize("rounds", [1, 2, 4, 8])
def test_the_schedule_shares_going_first_and_following_oneself(rounds: int) -> None:
    order = paired.schedule(rounds)
    assert order.count(0) == order.count(1) == rounds
    pairs = [order[i : i + 2] for i in range(0, len(order), 2)]
    assert all(sorted(p) == [0, 1] for p in pairs)  # round i of both runs back to back
    if rounds % 2 == 0:
        assert sum(p[0] == 0 for p in pairs) == rounds // 2  # each goes first half the time
        repeats = [order[i] for i in range(1, len(order)) if order[i] == order[i - 1]]
        assert abs(repeats.count(0) - repeats.count(1)) <= 1
    assert paired.schedule(4) == [0, 1, 1, 0, 1, 0, 0, 1]


def _round(rps: float, latencies: list[float], errors: int = 0) -> dict[str, Any]:
    return {
        "duration_s": 2.0,
        "ok": len(latencies),
        "errors": errors,
        "error_kinds": {"http_503": errors} if errors else {},
        "warmup_errors": {},
        "unfinished_at_end": 1,
        "rps": rps,
        "p50_ms": 1000 * sorted(latencies)[len(latencies) // 2],
        "server_cpu_cores": 1.5,
        "client_cpu_cores": 0.1,
        "client_cpu_us_per_request": 100.0,
        "machine_cores": 2,
        "latencies_s": latencies,
    }


def test_rounds_are_pooled_into_one_row() -> None:
    rounds = [_round(2.0, [0.001] * 4), _round(3.0, [0.003] * 6, errors=2)]
    row = paired.pooled(8, rounds)
    assert row["concurrency"] == 8 and row["duration_s"] == 4.0
    assert row["ok"] == 10 and row["rps"] == 2.5  # 10 answers in 4 s, not the mean of the rates
    assert row["errors"] == 2 and row["error_kinds"] == {"http_503": 2}
    assert row["n"] == 10 and row["p50_ms"] == pytest.approx(3.0)  # pooled, not averaged
    assert row["unfinished_at_end"] == 2
    assert [r["rps"] for r in row["rounds"]] == [2.0, 3.0]
    assert "latencies_s" not in rounds[0]  # raw latencies are not kept in the results


def test_ratios_are_taken_round_by_round() -> None:
    ours = {"rounds": [{"rps": 100.0, "p50_ms": 2.0}, {"rps": 90.0, "p50_ms": 3.0}]}
    other = {"rounds": [{"rps": 80.0, "p50_ms": 4.0}, {"rps": 100.0, "p50_ms": 3.0}]}
    ratios = paired.ratio_summary(ours, other)
    assert ratios["rps_min"] == 0.9 and ratios["rps_max"] == 1.25
    assert ratios["rps_median"] == pytest.approx((0.9 + 1.25) / 2, abs=1e-3)
    assert ratios["p50_min"] == 0.5 and ratios["p50_max"] == 1.0
