"""benchmarks/reliability.py's command line: the balancer stage is in the default run, can be
left out or run alone, and a partial run never overwrites the full report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import balancer_stage, reliability


def test_the_default_run_includes_the_balancer() -> None:
    args = reliability.parse_args(["--data", "d"])
    assert args.only is None and not args.skip_balancer
    assert "balancer" in reliability.STEPS and args.balancer_connections == 200
    assert args.rollout_bundle != args.bundle


def test_quick_shortens_the_balancer_settle_too() -> None:
    assert reliability.parse_args(["--data", "d", "--quick"]).balancer_settle == 2.0


def test_unknown_or_conflicting_steps_are_refused() -> None:
    with pytest.raises(SystemExit):
        reliability.parse_args(["--data", "d", "--only", "balancer,nope"])
    with pytest.raises(SystemExit):
        reliability.parse_args(["--data", "d", "--only", "balancer", "--skip-balancer"])
    assert reliability.parse_args(["--data", "d", "--only", "soak,balancer"]).only == [
        "soak",
        "balancer",
    ]


def test_a_rollout_needs_another_bundle() -> None:
    same = ["--data", "d", "--bundle", "models/x", "--rollout-bundle", "models/x"]
    with pytest.raises(SystemExit):
        reliability.parse_args(same)
    assert reliability.parse_args([*same, "--skip-balancer"]).skip_balancer
    assert reliability.parse_args([*same, "--only", "soak"]).only == ["soak"]


def test_only_the_balancer_without_haproxy(
    tmp_path: Path, tiny_bundle: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skips with the reason in its own report; reliability.json is left as it was."""
    monkeypatch.setattr(balancer_stage, "find_haproxy", lambda: None)
    (tmp_path / "reliability.json").write_text("{}\n")
    argv = ["--bundle", str(tiny_bundle), "--data", str(tiny_data), "--out", str(tmp_path)]
    assert reliability.main([*argv, "--only", "balancer"]) == 0
    assert json.loads((tmp_path / "balancer.json").read_text()) == {
        "skipped": balancer_stage.NOT_INSTALLED
    }
    assert "haproxy is not installed" in (tmp_path / "balancer.md").read_text()
    assert (tmp_path / "reliability.json").read_text() == "{}\n"
