"""The load-balancer stage end to end at tiny scale: a real HAProxy in front of real
`python -m service` replicas on tiny bundles, a few connections, 0.5 s settles and 200 ms
checks (about 25 s); the reload scenario also against a stand-in replica that reloads on
SIGHUP (tests/benchmarks/fake_replica.py), since the service may not. Without haproxy these
skip (under CI they fail: .ci/run installs it). No test asserts a timing."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import balancer_stage
from benchmarks.balancer import Checks, find_haproxy
from benchmarks.balancer_report import markdown
from benchmarks.balancer_stage import NOT_INSTALLED, StageOptions, run_stage
from benchmarks.replicas import point, replica_env
from service.settings import Settings
from tests.service.tiny_bundle import build_bundle

TEXTS = ["love the game", "awful update", "great", "hate this", "the best game"]
# Checks fast enough that a killed replica is seen DOWN (2 x 100 ms) before its restart is ready
# (a tiny replica is ready again 0.4-0.6 s after the kill on 2 cores; at 2 x 200 ms it raced).
FAST = Checks(inter_ms=100, fall=2, rise=2, timeout_ms=1000)
FAKE_REPLICA = Path(__file__).with_name("fake_replica.py")


def needs_haproxy() -> None:
    if find_haproxy() is not None:
        return
    if os.environ.get("CI"):
        pytest.fail("haproxy not found under CI: .ci/run must install it (apt-get install)")
    pytest.skip("haproxy is not installed (Debian: apt-get install haproxy)")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny bundles that answer with different labels (2 and 3)."""
    root = tmp_path_factory.mktemp("lb-bundles")
    words = ["love", "hate", "great", "awful", "game", "best"]
    two = build_bundle(root / "two", words=words, labels=["Negative", "Positive"])
    three = build_bundle(root / "three", words=words, labels=["Negative", "Neutral", "Positive"])
    return two, three


def options(bundles: tuple[Path, Path], **kw: Any) -> StageOptions:
    settings = {"connections": 8, "settle_s": 0.5, "step_s": 0.5, "switch_timeout_s": 3.0}
    return StageOptions(bundles=bundles, checks=FAST, **(settings | kw))


def counted(result: dict[str, Any]) -> bool:
    """Every request is either ok or failed, and the series holds each ok one once."""
    in_series = sum(row["ok"] for row in result["series"])
    return bool(result["ok"] + result["failed"] == result["requests"] and in_series == result["ok"])


def test_point_swaps_the_link_in_one_rename(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    link = tmp_path / "replica" / "sentiment"
    point(link, a)
    assert link.is_symlink() and link.resolve() == a
    point(link, b)
    assert link.resolve() == b
    assert sorted(p.name for p in link.parent.iterdir()) == ["sentiment"]  # nothing staged left


def test_a_replica_drains_longer_than_the_balancer_takes_to_notice(tmp_path: Path) -> None:
    env = replica_env(18000, tmp_path / "sentiment", FAST)
    settings = Settings.from_env(env)  # valid: BUNDLE and BUNDLES name the same one
    assert settings.drain_delay_s == FAST.drain_delay_s > FAST.down_within_s
    assert (settings.workers, settings.pool_size, settings.threads) == (1, 1, 1)


def test_without_haproxy_the_stage_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(balancer_stage, "find_haproxy", lambda: None)
    result = run_stage(TEXTS)
    assert result == {"skipped": NOT_INSTALLED}
    assert "Skipped: haproxy is not installed" in markdown(result)


@pytest.mark.slow
def test_the_stage_on_the_service(bundles: tuple[Path, Path]) -> None:
    needs_haproxy()
    scenarios = ("a_rollout", "b_reload", "c_kill_9", "d_sigterm")
    result = run_stage(TEXTS, options(bundles, scenarios=scenarios))
    a, b, c, d = (result[name] for name in scenarios)
    assert all(counted(r) for r in (a, b, c, d))
    # (a) both replicas moved to the other bundle; HAProxy kept every request answered.
    assert a["switched"] and a["old_version"] != a["new_version"]
    assert a["failed"] == 0 and [s["replica"] for s in a["steps"]] == ["r1", "r2"]
    # (b) a reload where the service has one; else said so, and nothing was broken by it.
    if b["supported"]:
        assert b["new_version"] == a["old_version"]
    else:
        assert b["note"].startswith("reload not supported by this service")
    if set(b["sighup"].values()) != {"caught"}:  # it would have ended them: never sent
        assert "none was sent" in b["note"] and "steps" not in b
    assert b["failed"] == 0
    # (c) noticed, back, and the other replica answered meanwhile.
    assert c["down_after_s"] is not None and c["up_after_s"] is not None
    assert c["other_kept_answering"] and c["first_answer_after_up_s"] is not None
    assert c["failed"] <= (c["in_flight_at_kill_haproxy"] or 0)
    # (d) /ready said 503 while the listener was still open; a clean exit, no resets.
    assert d["exit_status"] == 0 and d["client_resets"] == 0
    assert d["ready_503_after_s"] is not None and d["listener_closed_after_s"] is not None
    assert d["ready_503_after_s"] < d["listener_closed_after_s"]
    report = markdown(result)
    assert report.count("\n| (") == 4 and "0-" in report


@pytest.mark.slow
@pytest.mark.parametrize("reloads", [True, False], ids=["reloads", "ignores-sighup"])
def test_reload_with_a_replica_that_handles_sighup(
    bundles: tuple[Path, Path], reloads: bool
) -> None:
    needs_haproxy()
    argv = [sys.executable, str(FAKE_REPLICA), *([] if reloads else ["--ignore-sighup"])]
    opts = options(bundles, scenarios=("b_reload",), replica_argv=argv, switch_timeout_s=1.5)
    result = run_stage(TEXTS, opts)
    b = result["b_reload"]
    assert b["sighup"] == {"r1": "caught", "r2": "caught"} and counted(b)
    assert b["failed"] == 0
    if reloads:
        assert b["supported"] and b["old_version"] != b["new_version"]
        assert all(s["switched_after_s"] is not None for s in b["steps"])
        assert b["new_version"].startswith("tiny-test@")  # the header, not the labels
    else:
        assert not b["supported"]
        assert "did not change version within 1.5 s of SIGHUP" in b["note"]
