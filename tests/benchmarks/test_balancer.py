"""benchmarks/balancer.py: the HAProxy configuration it generates (loopback only, readiness
checks, retries that never double a struggling service's load) and the stats it reads."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks.balancer import (
    Checks,
    ServerStat,
    delta,
    parse_stats,
    render_config,
    server_timeout_s,
)
from service.settings import Settings

SAMPLE = Path(__file__).with_name("data") / "haproxy-2.6-show-stat.csv"
REPLICAS = [("r1", 18001), ("r2", 18002)]


def config(checks: Checks | None = None) -> str:
    return render_config(18000, REPLICAS, Path("/tmp/x/haproxy.sock"), checks or Checks())


def directives(text: str) -> list[str]:
    """The configuration's lines without comments and indentation."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def test_binds_and_reaches_loopback_only() -> None:
    lines = directives(config())
    assert [line for line in lines if line.startswith("bind ")] == ["bind 127.0.0.1:18000"]
    servers = [line for line in lines if line.startswith("server ")]
    assert servers == ["server r1 127.0.0.1:18001", "server r2 127.0.0.1:18002"]
    addresses = re.findall(r"\b(\d+\.\d+\.\d+\.\d+)", "\n".join(lines))
    assert set(addresses) == {"127.0.0.1"}


def test_checks_readiness_with_the_given_timing() -> None:
    lines = directives(config(Checks(inter_ms=300, fall=3, rise=4, timeout_ms=900)))
    assert "option httpchk GET /ready" in lines
    assert "http-check expect status 200" in lines
    assert "default-server check inter 300ms fall 3 rise 4" in lines
    assert "timeout check 900ms" in lines


def test_retries_only_what_was_not_answered() -> None:
    """Re-sent: connection failures and empty responses, on another replica; never timeouts or
    5xx answers (that would double the load on a struggling service)."""
    lines = directives(config())
    (retry_on,) = [line for line in lines if line.startswith("retry-on ")]
    assert set(retry_on.split()[1:]) == {"conn-failure", "empty-response"}
    assert "option redispatch 1" in lines
    assert any(re.fullmatch(r"retries [1-9]", line) for line in lines)
    assert "http-reuse safe" in lines and "option http-keep-alive" in lines


def test_server_timeout_outlasts_the_longest_request() -> None:
    settings = Settings(request_timeout_s=12.0, shutdown_timeout_s=30.0)
    assert server_timeout_s(settings) > settings.longest_request_s
    assert f"timeout server {server_timeout_s()}s" in directives(config())


def test_drain_outlasts_the_time_to_mark_a_replica_down() -> None:
    checks = Checks(inter_ms=500, fall=2)
    assert checks.down_within_s == 1.0
    assert checks.drain_delay_s == 1.5 > checks.down_within_s
    assert Checks(inter_ms=200, fall=3).drain_delay_s == pytest.approx(0.8)


def test_needs_a_replica() -> None:
    with pytest.raises(ValueError):
        render_config(18000, [], Path("/tmp/s"))


def test_haproxy_accepts_the_configuration(tmp_path: Path) -> None:
    """`haproxy -c` on the generated file (skipped where haproxy is not installed)."""
    from benchmarks.balancer import find_haproxy

    binary = find_haproxy()
    if binary is None:
        pytest.skip("haproxy is not installed")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_config(18000, REPLICAS, tmp_path / "s.sock"))
    done = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_parses_servers_from_haproxy_26_stats() -> None:
    stats = parse_stats(SAMPLE.read_text())
    assert set(stats) == {"r1", "r2"}  # frontend and backend rows left out
    r1, r2 = stats["r1"], stats["r2"]
    assert (r1.status, r1.state, r1.check_status) == ("UP", "UP", "L7OK")
    assert (r2.status, r2.state, r2.check_status) == ("DOWN", "DOWN", "L4CON")
    assert (r1.lbtot, r1.hrsp_2xx, r1.scur) == (5, 5, 0)
    assert (r2.lbtot, r2.hrsp_2xx, r2.econ) == (0, 0, 0)


def test_transitional_states_are_what_traffic_sees() -> None:
    assert ServerStat("a", "UP 1/2").state == "UP"  # one check failed: still sent requests
    assert ServerStat("a", "DOWN 1/2").state == "DOWN"  # one check passed: not yet
    assert ServerStat("a", "MAINT").state == "MAINT"


def test_counters_grow_by_their_difference() -> None:
    before = ServerStat("a", "UP", scur=9, lbtot=10, wretr=1, econ=2)
    after = ServerStat("a", "DOWN", scur=0, lbtot=15, wretr=4, econ=2)
    grown = delta(before, after)
    assert grown["lbtot"] == 5 and grown["wretr"] == 3 and grown["econ"] == 0
    assert "scur" not in grown  # a level, not a counter


def test_find_haproxy_looks_beyond_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian installs it in /usr/sbin, which a user's PATH may lack."""
    from benchmarks import balancer

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(balancer, "HAPROXY_PATHS", ("/nonexistent/haproxy",))
    assert balancer.find_haproxy() is None
    monkeypatch.setattr(balancer, "HAPROXY_PATHS", ("/nonexistent/haproxy", "/bin/sh"))
    assert balancer.find_haproxy() == "/bin/sh"
