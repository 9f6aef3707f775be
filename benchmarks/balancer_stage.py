"""`make reliability`'s load-balancer stage: HAProxy on loopback in front of two replicas
(`python -m service`, one worker each), a steady closed-loop load through it, and four
scenarios one after another, each measured on the same ledger of answers:

(a) rollout: a different bundle to both replicas, one at a time (drain by SIGTERM, replace the
    bundle folder, start, ready, UP, next): failures, and the answers' switch of version;
(b) reload: the bundle folders swapped back and SIGHUP to each replica (the service reloads
    in place); reported as not supported when a replica does not handle SIGHUP or its
    answers' version does not change in time;
(c) kill -9 of one replica, restarted at once as a supervisor would: failures against its
    requests in flight, the time until HAProxy marks it DOWN and until it is UP again;
(d) SIGTERM of a replica: when /ready turned 503, when HAProxy marked it DOWN, when its
    listener closed, and the resets anyone saw;
(e) the control for (d): the same with no drain delay, to show what the delay buys.

Each replica's bundle is a symlink in a scratch folder, swapped atomically (a rename over the
old link, as a Kubernetes volume swaps its data); its name is the model name the service
reports, the same for both bundles, so a switch shows in the `x-model-version` header when the
service sends it and in the answers' labels when it does not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.balancer import Balancer, Checks, find_haproxy
from benchmarks.client import build_requests
from benchmarks.observers import ReadyProbe, StatsWatcher, disposition
from benchmarks.ports import free_port
from benchmarks.replicas import LINK_NAME, Replica, Stage, now, point, replica_env, seconds_since
from benchmarks.steady_load import SteadyLoad
from service.bundle import load_bundle

NOT_INSTALLED = "haproxy is not installed (Debian: apt-get install haproxy): stage skipped"


def rollout(stage: Stage) -> dict[str, Any]:
    """(a) The other bundle to every replica, one at a time: drain (SIGTERM: /ready 503, HAProxy
    marks it DOWN, the listener closes after the drain delay, accepted requests finish),
    replace the bundle, start, ready, UP; then the next."""
    start = now()
    stage.settle()
    old = stage.ledger.dominant_version(start, now())
    target = stage.bundles[1] if stage.served == stage.bundles[0] else stage.bundles[0]
    steps = []
    for replica in stage.replicas:
        point(replica.link, target)
        term = now()
        replica.server.stop()  # SIGTERM, then waits for the exit
        exited = now()
        down = stage.watch.became(replica.name, "DOWN", term)
        step = {
            "replica": replica.name,
            "down_after_s": seconds_since(down, term),
            "exited_after_s": seconds_since(exited, term),
            "down_before_exit": down is not None and down <= exited,
            **stage.start_again(replica, term),
        }
        steps.append(step)
    stage.served = target
    stage.settle()
    end = now()
    new = stage.ledger.dominant_version(end - stage.settle_s, end)
    last_old = stage.ledger.last(end, version=old) if old else None
    first_new = stage.ledger.first(start, version=new) if new else None
    after = stage.ledger.summary(end - stage.settle_s, end)
    return {
        "old_version": old,
        "new_version": new,
        "switched": bool(old and new and old != new and set(after["versions"]) == {new}),
        "first_new_answer_s": seconds_since(first_new, start),
        "last_old_answer_s": seconds_since(last_old, start),
        "steps": steps,
        **stage.window(start, end),
    }


def reload(stage: Stage) -> dict[str, Any]:
    """(b) Swap every replica's bundle folder back and SIGHUP the replicas one at a time, each
    until its answers change version. Never sends a SIGHUP that would end a process."""
    start = now()
    stage.settle()
    settled = now()
    before = {r.name: stage.ledger.dominant_version(start, settled, r.name) for r in stage.replicas}
    handled = {r.name: disposition(r.pid, signal.SIGHUP) for r in stage.replicas}
    out: dict[str, Any] = {"sighup": handled, "supported": False}
    if any(d != "caught" for d in handled.values()):
        out["note"] = (
            "reload not supported by this service: SIGHUP is not handled "
            f"({', '.join(f'{k}: {v}' for k, v in handled.items())}; default would end the "
            "process), so none was sent"
        )
        stage.settle()
        return {**out, **stage.window(start, now())}
    names = {load_bundle(b).model_name for b in stage.bundles}
    if len(names) > 1:
        out["note"] = (
            f"no reload: the two bundles are different models ({', '.join(sorted(names))}); a "
            "reload keeps the served model names, so a new model takes a restart as in (a). "
            "Pass --rollout-bundle a new version of the same model to measure a reload"
        )
        stage.settle()
        return {**out, **stage.window(start, now())}
    previous = stage.served
    stage.point_all(stage.bundles[0] if previous == stage.bundles[1] else stage.bundles[1])
    steps = []
    for replica in stage.replicas:
        step = _reload_one(stage, replica, before[replica.name])
        steps.append(step)
        if step["switched_after_s"] is None:
            stage.point_all(previous)  # the folders again match what is served
            out["note"] = (
                f"reload not supported by this service: {replica.name}'s answers did not change "
                f"version within {stage.switch_timeout_s:g} s of SIGHUP"
            )
            break
    else:
        out["supported"] = True
    stage.settle()
    end = now()
    out["old_version"] = next(iter(before.values()), None)
    out["new_version"] = stage.ledger.dominant_version(end - stage.settle_s, end)
    return {**out, "steps": steps, **stage.window(start, end)}


def _reload_one(stage: Stage, replica: Replica, old: str | None) -> dict[str, Any]:
    """SIGHUP one replica and wait until it answers with another version; a replica the
    signal ended is started again (reported)."""
    sent = now()
    os.kill(replica.pid, signal.SIGHUP)
    deadline = sent + stage.switch_timeout_s
    switched = None
    while now() < deadline and replica.alive():
        switched = stage.ledger.first(sent, server=replica.name, other_than=old)
        if switched is not None:
            break
        time.sleep(0.05)
    step: dict[str, Any] = {
        "replica": replica.name,
        "switched_after_s": seconds_since(switched, sent),
        "last_old_answer_s": seconds_since(
            stage.ledger.last(now(), version=old, server=replica.name), sent
        ),
    }
    if not replica.alive():
        step["ended_by_sighup"] = True
        step.update(stage.start_again(replica, sent))
    return step


def kill_one(stage: Stage) -> dict[str, Any]:
    """(c) kill -9 of one replica, started again at once (a supervisor's restart): requests
    lost against those it had in flight, kill -> DOWN -> UP, traffic on the other meanwhile."""
    victim, other = stage.replicas[0], stage.replicas[1]
    start = now()
    stage.settle()
    killed = now()
    in_flight = stage.watch.at(killed).get(victim.name)
    client_in_flight = stage.load.inflight
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.server.process is not None
    victim.server.process.wait(timeout=10)
    timing = stage.start_again(victim, killed)
    down = stage.watch.became(victim.name, "DOWN", killed)
    up = stage.watch.became(victim.name, "UP", down or killed)
    back = stage.wait_answer(up or now(), victim.name, stage.settle_s + 5)
    stage.settle()
    end = now()
    outage = stage.ledger.summary(killed, up or end)
    return {
        "replica": victim.name,
        "in_flight_at_kill_haproxy": in_flight.scur if in_flight else None,
        "in_flight_at_kill_clients_total": client_in_flight,
        "down_after_s": seconds_since(down, killed),
        "down_bound_s": stage.checks.down_within_s,
        **timing,
        "first_answer_after_up_s": seconds_since(back, up) if up else None,
        "outage": {
            "ok": outage["ok"],
            "failed": outage["failed"],
            "servers": outage["servers"],
        },
        "other_kept_answering": outage["servers"].get(other.name, 0) > 0,
        "haproxy_counters": stage.counters(victim.name, killed, end),
        **stage.window(start, end),
    }


def sigterm_one(stage: Stage) -> dict[str, Any]:
    """(d) SIGTERM of one replica: /ready 503 -> DOWN -> listener closed -> exit, and what
    anyone saw of it (client failures and resets, HAProxy's errors and retries for it); then
    started again so the stage ends with both replicas serving."""
    start = now()
    stage.settle()
    return _sigterm(stage, stage.replicas[1], stage.checks.drain_delay_s, start)


def sigterm_without_drain(stage: Stage) -> dict[str, Any]:
    """(e) The control for (d): the same on a replica started with SENTIMENT_DRAIN_DELAY_S=0,
    which closes its listener while the balancer still sends it requests. HAProxy re-sends
    the refused ones elsewhere (retry-on conn-failure): its counters show what a balancer
    without retries (a Kubernetes Service: kernel rules, no retry) would have failed."""
    victim = stage.replicas[1]
    start = now()
    normal = victim.server.env["SENTIMENT_DRAIN_DELAY_S"]
    victim.server.stop()
    victim.server.env["SENTIMENT_DRAIN_DELAY_S"] = "0"
    try:
        stage.start_again(victim, now())
    finally:
        victim.server.env["SENTIMENT_DRAIN_DELAY_S"] = normal  # for the restart after it
    stage.settle()
    return _sigterm(stage, victim, 0.0, start)


def _sigterm(stage: Stage, victim: Replica, drain: float, start: float) -> dict[str, Any]:
    with ReadyProbe(victim.port) as probe:
        term = now()
        os.kill(victim.pid, signal.SIGTERM)
        assert victim.server.process is not None
        status = victim.server.process.wait(timeout=60)
        exited = now()
        deadline = exited + 2.0
        while probe.first_refused is None and now() < deadline:
            time.sleep(0.01)
    timing = stage.start_again(victim, term)  # seconds: the figures below are all in by then
    down = stage.watch.became(victim.name, "DOWN", term)
    last_answer = stage.ledger.last(exited + 1.0, server=victim.name)
    around = stage.ledger.summary(term, exited + 1.0)
    stage.settle()
    end = now()
    ready_503, closed = probe.first_503, probe.first_refused
    return {
        "replica": victim.name,
        "drain_delay_s": drain,
        "ready_503_after_s": seconds_since(ready_503, term),
        "down_after_s": seconds_since(down, term),
        "listener_closed_after_s": seconds_since(closed, term),
        "last_answer_after_s": seconds_since(last_answer, term),
        "exited_after_s": seconds_since(exited, term),
        "exit_status": status,
        "order_ok": bool(ready_503 and down and closed and ready_503 <= down <= closed),
        "client_resets": sum(around["failed_by_kind"].get("connection", {}).values()),
        "client_failed": around["failed"],
        "haproxy_counters": stage.counters(victim.name, term, exited + 0.2),
        **timing,
        **stage.window(start, end),
    }


SCENARIOS: dict[str, Callable[[Stage], dict[str, Any]]] = {
    "a_rollout": rollout,
    "b_reload": reload,
    "c_kill_9": kill_one,
    "d_sigterm": sigterm_one,
    "e_sigterm_without_drain": sigterm_without_drain,
}


# ---------------------------------------------------------------------------------- stage


@dataclass(frozen=True)
class StageOptions:
    """What the stage runs with; the defaults are `make reliability`'s."""

    bundles: tuple[Path, Path] = (Path("models/sentiment-binary"), Path("models/sentiment-3class"))
    connections: int = 200
    settle_s: float = 5.0
    step_s: float = 1.0
    switch_timeout_s: float = 30.0
    startup_timeout_s: float = 120.0
    checks: Checks = field(default_factory=Checks)
    scenarios: Sequence[str] = tuple(SCENARIOS)
    replica_argv: Sequence[str] = ()  # empty: `python -m service`; tests run a stand-in


def run_stage(texts: Sequence[str], options: StageOptions = StageOptions()) -> dict[str, Any]:
    """Start two replicas and HAProxy, put the load on, run the scenarios; stop everything.
    Without haproxy: `{"skipped": reason}`."""
    binary = find_haproxy()
    if binary is None:
        return {"skipped": NOT_INSTALLED}
    started = now()
    with tempfile.TemporaryDirectory(prefix="lb-stage-") as scratch:
        folder = Path(scratch)
        replicas: list[Replica] = []
        for name in ("r1", "r2"):
            taken = [r.port for r in replicas]
            replicas.append(Replica.create(name, folder, options.bundles[0], options, taken))
        try:
            for replica in replicas:
                replica.server.start()
            results = _with_balancer(binary, folder, replicas, texts, options)
        finally:
            for replica in replicas:
                replica.server.stop()
    results["elapsed_s"] = round(now() - started, 1)
    return results


def _with_balancer(
    binary: str, folder: Path, replicas: list[Replica], texts: Sequence[str], opts: StageOptions
) -> dict[str, Any]:
    port = free_port()
    names = [(r.name, r.port) for r in replicas]
    requests = build_requests(texts, "127.0.0.1", port)  # no entity: the 3-class bundle reads none
    results: dict[str, Any] = {"setup": _setup(binary, replicas, opts)}
    balancer = Balancer(port, names, folder, opts.checks, binary)
    with balancer, StatsWatcher(balancer.stats) as watch:
        for replica in replicas:
            if not watch.wait_state(replica.name, "UP", opts.checks.up_within_s * 4 + 5):
                raise RuntimeError(f"HAProxy never marked {replica.name} UP:\n{balancer.tail()}")
        with SteadyLoad("127.0.0.1", port, requests, opts.connections) as load:
            stage = Stage(
                replicas, watch, load, opts.bundles, opts.checks,
                opts.settle_s, opts.step_s, opts.switch_timeout_s,
            )  # fmt: skip
            for name in opts.scenarios:
                print(f"  balancer {name}:", flush=True)
                results[name] = SCENARIOS[name](stage)
                print(f"    {_brief(results[name])}", flush=True)
        results["haproxy_log_tail"] = balancer.tail(40).splitlines()
    return results


def _setup(binary: str, replicas: list[Replica], opts: StageOptions) -> dict[str, Any]:
    version = subprocess.run([binary, "-v"], capture_output=True, text=True).stdout
    env = replica_env(0, Path("<scratch>/<replica>") / LINK_NAME, opts.checks)
    return {
        "haproxy": version.splitlines()[0] if version else binary,
        "connections": opts.connections,
        "replicas": len(replicas),
        "bundles": [str(b) for b in opts.bundles],
        "checks": {
            "inter_ms": opts.checks.inter_ms,
            "fall": opts.checks.fall,
            "rise": opts.checks.rise,
            "timeout_ms": opts.checks.timeout_ms,
            "down_within_s": opts.checks.down_within_s,
            "up_within_s": opts.checks.up_within_s,
        },
        "replica_settings": {k: v for k, v in env.items() if k != "SENTIMENT_PORT"},
        "settle_s": opts.settle_s,
    }


def _brief(result: dict[str, Any]) -> str:
    """One line for the console: the counts and the scenario's own figures."""
    skip = {"series", "series_step_s", "steps", "failed_by_kind", "outage", "haproxy_counters"}
    return ", ".join(f"{k}={v}" for k, v in result.items() if k not in skip)
