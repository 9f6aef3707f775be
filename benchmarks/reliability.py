"""`make reliability`: how the service behaves when things go wrong, measured in one bounded run
on loopback, with the service's default settings.

Scenarios (each against a fresh server unless said otherwise):
1. capacity: 200 connections, closed loop;
2. overload: 2,000 and 5,000 connections whose clients honour `Retry-After`, and 2,000 that
   retry at once (wrk-style); goodput = 200 responses/s, beside the capacity, with the CPU the
   server and the load generator (same cores) used, and the server CPU one rejection costs
   (a difference of two CPU figures: the immediate-retry run's beyond its answers);
   refusal: the same 2,000 immediate-retry connections against a bundle whose run takes ~30
   ms, so the queue is full throughout and nearly every request is refused: the event loop
   thread's CPU per refusal, measured rather than inferred;
3. slow clients: connections that send headers and part of a body (or half the headers), then
   nothing, while 8 normal clients measure their latency; how many the server closed (408) and
   when;
4. bad inputs: malformed requests of every kind; statuses counted (no 5xx allowed);
5. SIGTERM under load: requests lost (sent on an open connection, never answered);
6. kill -9 of one of two workers: time until two workers serve again, requests lost;
7. soak: RSS while 64 clients run for a minute;
8. balancer: HAProxy in front of two replicas under a steady 200-connection load: a rolling
   rollout of another bundle, a reload by SIGHUP, kill -9 and SIGTERM of one replica
   (benchmarks/balancer_stage.py; skipped with a message when haproxy is not installed).

Run: python -m benchmarks.reliability --bundle models/sentiment-3class --data DIR [--quick]
     [--skip-balancer | --only balancer]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from benchmarks import http, proctimes
from benchmarks.balancer_report import markdown
from benchmarks.balancer_stage import StageOptions, run_stage
from benchmarks.client import build_requests
from benchmarks.floor import stub_bundle
from benchmarks.ports import free_port
from benchmarks.server_process import Server, python_module
from benchmarks.texts import load_tweets
from service.bundle import load_bundle

BAD_BODIES: list[tuple[str, bytes, dict[str, str]]] = [
    ("not json", b"{nope", {}),
    ("not utf-8", b'{"text": "\xff\xfe"}', {}),
    ("wrong type", b'{"text": 5}', {}),
    ("empty text", b'{"text": "   "}', {}),
    ("unknown field", b'{"text": "a", "x": 1}', {}),
    ("both text and texts", b'{"text": "a", "texts": ["b"]}', {}),
    ("too many texts", json.dumps({"texts": ["a"] * 1000}).encode(), {}),
    ("too large", b'{"text": "' + b"a" * 70000 + b'"}', {}),
    ("unknown model", b'{"text": "a", "model": "nope"}', {}),
    ("wrong content type", b'{"text": "a"}', {"content-type": "text/plain"}),
    ("deep nesting", b"[" * 10000 + b"]" * 10000, {}),
    ("huge number", b'{"text": "a", "n": ' + b"9" * 5000 + b"}", {}),
    ("lone surrogate", b'{"text": "\\ud800"}', {}),
    ("null", b"null", {}),
]


def serve(args: argparse.Namespace, port: int, bundle: Path | None = None, **env: str) -> Server:
    """A server with the service's defaults (started by `with`, or `.start()`)."""
    return Server(
        "reliability",
        python_module("service"),
        port,
        {"SENTIMENT_BUNDLE": str(bundle or args.bundle), "SENTIMENT_PORT": str(port), **env},
    )


def level(
    server: Server, requests: list[bytes], conns: int, seconds: float, **kw: Any
) -> dict[str, Any]:
    row = http.run_level(
        "127.0.0.1", server.port, requests, conns, 3.0, seconds, 30.0, server.pid, **kw
    )
    rejected = row["error_kinds"].get("http_503", 0)
    return {
        "connections": conns,
        "goodput_rps": row["rps"],
        "rejected_per_s": round(rejected / seconds, 1),
        "other_errors": {k: v for k, v in row["error_kinds"].items() if k != "http_503"},
        "p50_ms": row["p50_ms"],
        "p99_ms": row["p99_ms"],
        "server_cpu_cores": row["server_cpu_cores"],
        "client_cpu_cores": row["client_cpu_cores"],
    }


def overload(args: argparse.Namespace, requests: list[bytes], port: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runs = [
        ("capacity_200", 200, False),
        ("honour_2000", 2000, True),
        ("honour_5000", 5000, True),
        ("immediate_2000", 2000, False),
    ]
    for name, conns, honour in runs:
        with serve(args, port) as server:
            out[name] = level(server, requests, conns, args.seconds, honour_retry_after=honour)
        print(f"  {name}: {out[name]}", flush=True)
    cap = out["capacity_200"]
    for name in ("honour_2000", "honour_5000", "immediate_2000"):
        out[name]["goodput_vs_capacity"] = round(out[name]["goodput_rps"] / cap["goodput_rps"], 3)
    # Server CPU per rejection: what the immediate-retry run used beyond its answered requests
    # (at the capacity run's CPU per answer), divided by its rejections.
    imm = out["immediate_2000"]
    per_answer = cap["server_cpu_cores"] / cap["goodput_rps"]
    spare = imm["server_cpu_cores"] - imm["goodput_rps"] * per_answer
    out["server_cpu_us_per_rejection"] = (
        round(max(spare, 0.0) / imm["rejected_per_s"] * 1e6, 1) if imm["rejected_per_s"] else None
    )
    return out


REFUSAL_MATMULS = 20  # the slow stub's run: 29 ms on one idle core (43-47 answers/s on 2 busy)


def refusal(args: argparse.Namespace, requests: list[bytes], port: int) -> dict[str, Any]:
    """2,000 clients retrying at once against a service that is always full: the loop thread's
    CPU per refusal (it also parses and admits the few answered requests: an upper bound),
    beside the whole server's."""
    with tempfile.TemporaryDirectory(prefix="reliability-slow-") as tmp:
        slow = stub_bundle(load_bundle(args.bundle), Path(tmp) / "slow", REFUSAL_MATMULS)
        # a queue of one full request (~1.5 s of runs): nothing waits long enough to time out
        env = {"SENTIMENT_IDLE_THREADS": "1", "SENTIMENT_QUEUE_SIZE": "64"}
        with serve(args, port, slow, **env) as server:
            window = proctimes.Window()
            out = level(
                server, requests, 2000, args.seconds,
                at_window_start=lambda: window.open(server.pid), at_window_end=window.close,
            )  # fmt: skip
    refused = out["rejected_per_s"] * args.seconds
    loop_us = round(window.loop_cpu_s / refused * 1e6, 1) if refused else None
    return out | {
        "loop_cpu_us_per_refusal": loop_us,
        "loop_cpu_cores": round(window.loop_cpu_s / args.seconds, 2),
    }


# What a stalled client has sent: a whole head and the start of a body, or half a head.
STALLS = {
    "mid_body": (
        b"POST /predict HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"content-length: 40\r\n\r\n" + b'{"text": "'
    ),
    "mid_headers": b"POST /predict HTTP/1.1\r\nhost: t\r\ncontent-",
}


def slow_clients(
    args: argparse.Namespace, requests: list[bytes], port: int, stall: str
) -> dict[str, Any]:
    """Clients that stall (mid-body or mid-headers), while 8 normal clients run."""
    head = STALLS[stall]
    with serve(args, port) as server:
        before = level(server, requests, 8, args.seconds / 2)
        socks = []
        for _ in range(args.slow):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(head)
            socks.append(sock)
        opened = time.perf_counter()
        during = level(server, requests, 8, args.seconds / 2)
        closed, statuses = 0, set()
        for sock in socks:
            sock.settimeout(max(0.1, 20 - (time.perf_counter() - opened)))
            try:
                data = sock.recv(4096)
                statuses.add(data[9:12].decode() if data else "closed")
                closed += 1
            except OSError:
                pass
            sock.close()
        waited = round(time.perf_counter() - opened, 1)
    return {
        "slow_connections": args.slow,
        "closed_by_server": closed,
        "statuses": sorted(statuses),
        "seconds_until_all_checked": waited,
        "normal_p50_ms_before": before["p50_ms"],
        "normal_p50_ms_during": during["p50_ms"],
        "normal_rps_before": before["goodput_rps"],
        "normal_rps_during": during["goodput_rps"],
    }


def bad_inputs(args: argparse.Namespace, port: int) -> dict[str, Any]:
    import httpx

    statuses: dict[str, int] = {}
    with serve(args, port) as server, httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as c:
        for name, body, headers in BAD_BODIES:
            response = c.post(
                "/predict", content=body, headers={"content-type": "application/json", **headers}
            )
            statuses[name] = response.status_code
    return {
        "tried": len(statuses),
        "statuses": statuses,
        "server_errors": sum(code >= 500 for code in statuses.values()),
    }


def _lost(row: dict[str, Any]) -> int:
    """Requests sent on an open connection and never answered (reset or timed out)."""
    return sum(v for k, v in row["error_kinds"].items() if k.startswith(("conn:", "timeout")))


def sigterm_under_load(
    args: argparse.Namespace, requests: list[bytes], port: int
) -> dict[str, Any]:
    server = serve(args, port).start()
    timer = threading.Timer(args.seconds / 2 + 3.0, os.kill, (server.pid, signal.SIGTERM))
    timer.start()
    row = http.run_level("127.0.0.1", port, requests, 64, 3.0, args.seconds, 30.0, server.pid)
    assert server.process is not None
    status = server.process.wait(timeout=60)
    lost = _lost(row)
    refused = sum(v for k, v in row["error_kinds"].items() if k.startswith("connect:"))
    return {
        "answered": row["ok"],
        "lost_after_being_sent": lost,
        "refused_after_the_listener_closed": refused,
        "other": {
            k: v
            for k, v in row["error_kinds"].items()
            if not k.startswith(("conn:", "timeout", "connect:"))
        },
        "exit_status": status,
    }


def kill_a_worker(args: argparse.Namespace, requests: list[bytes], port: int) -> dict[str, Any]:
    with serve(args, port, SENTIMENT_WORKERS="2") as server:
        parent = psutil.Process(server.pid)

        def workers() -> list[psutil.Process]:
            """uvicorn's live workers: multiprocessing spawns (not its resource tracker)."""
            found = []
            for child in parent.children():
                with contextlib.suppress(psutil.Error):  # gone, or a zombie not yet reaped
                    if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(
                        child.cmdline()
                    ):
                        found.append(child)
            return found

        found: dict[str, Any] = {}

        def kill() -> None:
            if not workers():
                found["error"] = "no worker process found"
                return
            victim = max(workers(), key=lambda p: p.pid)
            found["victim"] = victim.pid
            start = time.perf_counter()
            victim.kill()
            while time.perf_counter() - start < 30:
                alive = {p.pid for p in workers()} - {victim.pid}
                if len(alive) >= 2:
                    found["new_worker_process_after_s"] = round(time.perf_counter() - start, 2)
                    return
                time.sleep(0.05)

        timer = threading.Timer(3.0 + args.seconds / 3, kill)
        timer.start()
        row = http.run_level("127.0.0.1", port, requests, 64, 3.0, args.seconds, 30.0, server.pid)
        timer.join()
    lost = _lost(row)
    return {"answered": row["ok"], "lost": lost, "errors": row["error_kinds"], **found}


def soak(args: argparse.Namespace, requests: list[bytes], port: int) -> dict[str, Any]:
    with serve(args, port) as server:
        proc = psutil.Process(server.pid)
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(2.0):
                samples.append(proc.memory_info().rss / 1e6)

        thread = threading.Thread(target=sample)
        thread.start()
        row = http.run_level("127.0.0.1", port, requests, 64, 3.0, args.soak, 30.0, server.pid)
        stop.set()
        thread.join()
    return {
        "seconds": args.soak,
        "rps": row["rps"],
        "errors": row["errors"],
        "rss_mb_first": round(samples[0], 1) if samples else None,
        "rss_mb_last": round(samples[-1], 1) if samples else None,
        "rss_mb_max": round(max(samples), 1) if samples else None,
    }


def balancer(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    """The load-balancer stage, its JSON and Markdown written beside reliability.json."""
    options = StageOptions(
        bundles=(args.bundle, args.rollout_bundle),
        connections=args.balancer_connections,
        settle_s=args.balancer_settle,
    )
    result = run_stage(texts, options)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "balancer.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "balancer.md").write_text(markdown(result))
    if "skipped" in result:
        print(f"  {result['skipped']}", flush=True)
    print(f"  wrote {args.out / 'balancer.json'} and balancer.md", flush=True)
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reliability", description=__doc__)
    p.add_argument("--bundle", type=Path, default=Path("models/sentiment-3class"))
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    p.add_argument("--slow", type=int, default=2000, help="stalled slow-client connections")
    p.add_argument("--soak", type=float, default=60.0, help="soak seconds")
    p.add_argument("--out", type=Path, default=Path("reports/reliability"))
    p.add_argument(
        "--quick", action="store_true", help="3 s levels, 200 slow clients, 10 s soak, 2 s settle"
    )
    p.add_argument(
        "--rollout-bundle",
        type=Path,
        default=Path("models/sentiment-binary"),
        help="the bundle the balancer stage rolls out over --bundle (must differ from it)",
    )
    p.add_argument("--balancer-connections", type=int, default=200)
    p.add_argument(
        "--balancer-settle", type=float, default=5.0, help="steady seconds around each scenario"
    )
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--skip-balancer", action="store_true", help="leave out the balancer stage")
    steps.add_argument(
        "--only", type=lambda v: v.split(","), help=f"comma-separated steps of: {', '.join(STEPS)}"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.slow, args.soak, args.balancer_settle = 3.0, 200, 10.0, 2.0
    if args.only and set(args.only) - set(STEPS):
        p.error(f"--only: unknown steps {sorted(set(args.only) - set(STEPS))}; steps: {STEPS}")
    balancer = "balancer" in args.only if args.only else not args.skip_balancer
    if balancer and args.rollout_bundle.resolve() == args.bundle.resolve():
        p.error(
            "--rollout-bundle must differ from --bundle: a rollout to the same one shows nothing"
        )
    return args


STEPS = (
    "overload",
    "refusal",
    "slow_clients",
    "slow_headers",
    "bad_inputs",
    "sigterm_under_load",
    "kill_9_one_of_two_workers",
    "soak",
    "balancer",
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bundle = load_bundle(args.bundle)
    tweets, _ = load_tweets(args.data, limit=500)
    port = free_port()
    requests = build_requests(
        [t.text for t in tweets],
        "127.0.0.1",
        port,
        entities=[t.entity for t in tweets] if bundle.text_pair else None,
    )
    started = time.perf_counter()
    results: dict[str, Any] = {"bundle": str(args.bundle), "settings": "service defaults"}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("overload", lambda: overload(args, requests, port)),
        ("refusal", lambda: refusal(args, requests, port)),
        ("slow_clients", lambda: slow_clients(args, requests, port, "mid_body")),
        ("slow_headers", lambda: slow_clients(args, requests, port, "mid_headers")),
        ("bad_inputs", lambda: bad_inputs(args, port)),
        ("sigterm_under_load", lambda: sigterm_under_load(args, requests, port)),
        ("kill_9_one_of_two_workers", lambda: kill_a_worker(args, requests, port)),
        ("soak", lambda: soak(args, requests, port)),
        ("balancer", lambda: balancer(args, [t.text for t in tweets])),
    ]
    chosen = args.only or [n for n in STEPS if not (args.skip_balancer and n == "balancer")]
    for name, step in steps:
        if name not in chosen:
            continue
        print(f"{name}:", flush=True)
        results[name] = step()
        if name != "balancer":  # it prints its own lines
            print(f"  {results[name]}", flush=True)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    if args.only:  # a partial run leaves the full report as it is
        print(f"done: {', '.join(args.only)} ({results['elapsed_s']} s)")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reliability.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out / 'reliability.json'} ({results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
