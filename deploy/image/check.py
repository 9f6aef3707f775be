"""Run the built image as production would and check it from outside (`make image-test`).

    python deploy/image/check.py IMAGE [--port N]

The container runs with --network host, a read-only root, no capabilities, no-new-privileges,
2 CPUs and 1 GB. Checked: /ready within 30 s, Docker's health status, known tweets answered
exactly as the same bundle answers through service.engine on the host (and their fixed labels),
every API error path (JSON, right status, no 5xx), a non-root uid, no pip/TensorFlow/transformers
in the image, and `docker stop` under load (no accepted request lost, exit 0 in time). Stdlib
and the `service` package only; the container is removed whatever happens.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# Known tweets of the default model (models/sentiment-binary before it): (text, entity, label). Clear cases only: "Huge thanks to
# the support team, they fixed my account in minutes" (Amazon) was here, but it is a near-tie for the
# model itself (P(Positive) 0.578 fp32, 0.516 row-wise int8, 0.375 static int8): one of the 0.55 %
# of test-set answers static int8 changes, which the export gate measures; a smoke test of the image
# should not hinge on one.
KNOWN = [
    (
        "I absolutely love the new update, best game I have played all year!",
        "Overwatch",
        "Positive",
    ),
    ("Worst customer service ever, I want a refund", "Xbox", "Negative"),
    ("This is the most broken, laggy, unplayable mess. Uninstalling.", "Fortnite", "Negative"),
    (
        "Huge thanks to Amazon support, they fixed my order in minutes. Great service!",
        "Amazon",
        "Positive",
    ),
]
STOP_TIMEOUT_S = 30
NAME = "tweet-sentiment-image-test"


def free_port(start: int = 18000) -> int:
    for port in range(start, start + 1000):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18000-18999")


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    run = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {run.stderr.strip()}")
    return run.stdout.strip()


def call(
    base: str, path: str, body: bytes | None = None, content_type: str = "application/json"
) -> tuple[int, Any]:
    """(status, decoded JSON body) of one request; HTTP errors are answers too."""
    request = urllib.request.Request(base + path, data=body, method="POST" if body else "GET")
    if body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def predict_body(text: str, entity: str, **extra: Any) -> bytes:
    return json.dumps({"text": text, "entity": entity, **extra}).encode()


def host_answers(bundle_dir: Path) -> list[dict[str, Any]]:
    """What `make serve` answers for KNOWN: the same bundle through service.engine."""
    from service.bundle import load_bundle
    from service.engine import Engine
    from service.payload import render

    bundle = load_bundle(bundle_dir)
    engine = Engine(bundle, threads=1)
    answers = []
    for text, entity, _ in KNOWN:
        encoded = engine.encode([text], [entity] if engine.text_pair else None)
        prediction = render(engine.labels, engine.infer([encoded[0].ids]), encoded)[0]
        answers.append({**prediction, "model": bundle_dir.name})
    return answers


def wait_ready(base: str, deadline_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        try:
            if call(base, "/ready")[0] == 200:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"/ready not 200 within {deadline_s:.0f} s")


def wait_healthy(deadline_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        status = docker("inspect", "-f", "{{.State.Health.Status}}", NAME)
        if status == "healthy":
            return time.monotonic() - start
        assert status in {"starting", ""}, f"health status {status!r}"
        time.sleep(1)
    raise AssertionError(f"not healthy within {deadline_s:.0f} s")


def check_answers(base: str, bundle_dir: Path) -> None:
    for (text, entity, label), expected in zip(KNOWN, host_answers(bundle_dir), strict=True):
        status, got = call(base, "/predict", predict_body(text, entity))
        assert status == 200, (status, got)
        assert got == expected, f"container {got} != host {expected}"
        assert got["label"] == label, f"{text!r}: {got['label']} (expected {label})"


def check_errors(base: str) -> None:
    cases = {
        "bad JSON": ("/predict", b"{not json", "application/json", 400),
        "wrong content type": ("/predict", predict_body("hi", "Xbox"), "text/plain", 415),
        "missing field": ("/predict", b"{}", "application/json", 422),
        "too many texts": ("/predict", json.dumps({"texts": ["a"] * 65}).encode(), None, 413),
        "unknown model": ("/predict", predict_body("hi", "Xbox", model="nope"), None, 422),
        "unknown route": ("/no-such-route", None, None, 404),
    }
    for case, (path, body, content_type, want) in cases.items():
        status, got = call(base, path, body, content_type or "application/json")
        assert status == want, f"{case}: {status} {got} (expected {want})"
        assert isinstance(got.get("error"), dict) and got["error"].get("message"), (case, got)


def check_user() -> None:
    assert docker("inspect", "-f", "{{.Config.User}}", NAME).split(":")[0] not in {"", "0", "root"}
    uid = docker("exec", NAME, "python", "-c", "import os; print(os.getuid(), os.getgid())")
    assert uid.split()[0] != "0", f"runs as uid {uid}"
    status = docker("exec", NAME, "python", "-c", "print(open('/proc/1/status').read())")
    pid1_uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert pid1_uid != "0", f"PID 1 runs as uid {pid1_uid}"


# Run inside the image: no pip, TensorFlow or transformers installed in any site-packages (or
# dist-packages), no such wheel anywhere, no pip command, none importable by the service's python.
INSIDE = r"""
import importlib.util, os, re, sys
bad = re.compile(r"^(pip|tensorflow|tensorflow_cpu|tf_keras|transformers)([-_.].*)?$", re.I)
found = []
for top in ("/usr", "/opt", "/app", "/etc", "/root", "/home", "/var"):
    for d, dirs, files in os.walk(top):
        base = os.path.basename(d)
        if base in ("site-packages", "dist-packages"):
            found += [os.path.join(d, n) for n in dirs + files if bad.match(n)]
        if base == "bin":
            found += [os.path.join(d, n) for n in files if re.match(r"^pip[0-9.]*$", n)]
        found += [os.path.join(d, n) for n in files if n.endswith(".whl") and bad.match(n)]
found += [m for m in ("pip", "tensorflow", "transformers") if importlib.util.find_spec(m)]
print("\n".join(found))
sys.exit(1 if found else 0)
"""


def check_contents(image: str) -> None:
    run = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "host",
            "--entrypoint",
            "python",
            image,
            "-c",
            INSIDE,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, f"the image holds: {run.stdout.strip() or run.stderr.strip()}"


def app_answers() -> list[int]:
    """The status of every /predict the app has seen so far, from its access log."""
    logs = subprocess.run(["docker", "logs", NAME], capture_output=True, text=True, timeout=30)
    lines = (logs.stdout + logs.stderr).splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return [
        e["status"]
        for e in events
        if e.get("logger") == "service.access" and e["path"] == "/predict"
    ]


def check_stop_under_load(base: str) -> str:
    """Clients in threads while `docker stop`. Accepted = reached the app (its access log logs
    every request it saw, answered or not): each must have been answered 200 to its client, or
    503 (draining). A connection the server had not accepted when its listener closed is reset
    by the kernel, like a refused one: the client retries it, no answer was lost."""
    outcome = {"ok": 0, "draining": 0, "refused": 0, "reset": 0, "other": 0}
    other: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 20  # bounded whatever happens
    body = predict_body(*KNOWN[0][:2])

    def client() -> None:
        kind = ""
        while time.monotonic() < stop_at and kind not in {"refused", "reset"}:
            try:
                status, got = call(base, "/predict", body)
                kind = {200: "ok", 503: "draining"}.get(status, "other")
                if status == 200 and got["label"] != KNOWN[0][2]:
                    kind = "other"
            except (OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                kind = {ConnectionRefusedError: "refused", ConnectionResetError: "reset"}.get(
                    type(reason), "other"
                )
                if kind == "other":
                    other.append(repr(exc))
            with lock:
                outcome[kind] += 1

    before = app_answers()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    start = time.monotonic()
    docker("stop", "-t", str(STOP_TIMEOUT_S), NAME, timeout=STOP_TIMEOUT_S + 30)
    took = time.monotonic() - start
    for thread in threads:
        thread.join(timeout=25)
    code = docker("inspect", "-f", "{{.State.ExitCode}}", NAME)
    seen = app_answers()[len(before) :]
    assert outcome["ok"] > 0, "no request was answered under load"
    assert not other, f"failed requests: {other[:3]}"
    assert seen.count(200) == outcome["ok"], (
        f"app answered {seen.count(200)}, clients got {outcome['ok']}"
    )
    assert set(seen) <= {200, 503}, f"app statuses {sorted(set(seen))}"
    assert code == "0", f"exit code {code}"
    assert took < STOP_TIMEOUT_S, f"stop took {took:.1f} s (timeout {STOP_TIMEOUT_S} s)"
    counts = ", ".join(f"{k} {v}" for k, v in outcome.items() if v)
    return f"{counts}; the app saw {len(seen)}; exit 0 after {took:.1f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bundle", type=Path, default=Path("models/sentiment-3class"))
    args = parser.parse_args()
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    docker("rm", "-f", NAME, check=False)
    docker(
        "run", "-d", "--name", NAME, "--network", "host", "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--cpus", "2", "--memory", "1g",
        "-e", f"SENTIMENT_PORT={port}", args.image,
    )  # fmt: skip
    try:
        steps = [
            ("/ready within 30 s", lambda: f"{wait_ready(base, 30):.1f} s"),
            ("health status healthy", lambda: f"{wait_healthy(60):.1f} s more"),
            ("known tweets as on the host", lambda: check_answers(base, args.bundle)),
            ("error paths: JSON, right status", lambda: check_errors(base)),
            ("non-root uid", check_user),
            ("no pip, TensorFlow, transformers", lambda: check_contents(args.image)),
            ("docker stop under load", lambda: check_stop_under_load(base)),
        ]
        for title, step in steps:
            result = step()
            print(f"ok  {title}" + (f" ({result})" if isinstance(result, str) else ""))
    except (AssertionError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"FAIL {title}: {exc}", file=sys.stderr)
        print(docker("logs", "--tail", "30", NAME, check=False), file=sys.stderr)
        return 1
    finally:
        docker("rm", "-f", NAME, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
