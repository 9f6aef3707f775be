"""The real thing: `python -m service` (uvicorn, uvloop, httptools) on a free loopback port.

Concurrency, overload, SIGTERM draining, SIGHUP reloads, several workers and refusing to start,
all checked from the outside as a client sees them. Nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.ports import free_port
from service.backoff import CEILING_S
from service.bundle import load_bundle
from service.engine import Engine
from tests.service.test_reload import NEW_LABELS, replace_bundle, version
from tests.service.tiny_bundle import build_bundle

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]  # real server processes
REPO = Path(__file__).resolve().parents[2]
TEXTS = [
    "I love this game!",
    "awful update today, servers broken again",
    "the movie is the best",
    "great " * 30,
    "sad sad sad",
    "this is it",
    "i hate the new update",
    "happy 😀 today",
    "a",
    "worst game? bad",
]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics").text
        found = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, flags=re.M)
        return sum(float(x) for x in found)

    def settled_metric(self, name: str, expected: float) -> float:
        """The metric once it reaches `expected` (a request is counted just after its
        response is sent, so a client can be a hair faster than the counter)."""
        deadline = time.monotonic() + 5
        value = self.metric(name)
        while value != expected and time.monotonic() < deadline:
            time.sleep(0.02)
            value = self.metric(name)
        return value


def start(
    tmp_path: Path, bundle: Path | list[Path], *args: str, wait: bool = True, **env: str
) -> Server:
    """`python -m service` on `bundle` (SENTIMENT_BUNDLE) or a list (SENTIMENT_BUNDLES)."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if isinstance(bundle, list):
        environ["SENTIMENT_BUNDLES"] = ",".join(map(str, bundle))
    else:
        environ["SENTIMENT_BUNDLE"] = str(bundle)
    environ.update(
        SENTIMENT_PORT=str(port),
        SENTIMENT_HOST="127.0.0.1",
        SENTIMENT_LOG_LEVEL="info",
        **env,
    )
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", *args],
            cwd=REPO,
            env=environ,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, port, log)
    return wait_ready(server) if wait else server


def wait_ready(server: Server) -> Server:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited {server.process.returncode}:\n{server.logs()}")
        try:
            if httpx.get(server.url + "/ready", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"server not ready:\n{server.logs()}")


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


@pytest.fixture(scope="module")
def sluggish_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same answers as the tiny model, but each text costs milliseconds: queues build up."""
    return build_bundle(tmp_path_factory.mktemp("sluggish") / "b", slow=160)


def expected(bundle: Path, texts: list[str]) -> dict[str, dict[str, float]]:
    engine = Engine(load_bundle(bundle), threads=1)
    out = {}
    for text in texts:
        probs = engine.infer([engine.encode([text])[0].ids])[0]
        out[text] = dict(zip(engine.labels, probs.tolist(), strict=True))
    return out


async def fire(url: str, bodies: list[dict[str, object]], limit: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        return list(await asyncio.gather(*(client.post("/predict", json=b) for b in bodies)))


def check_answers(
    responses: list[httpx.Response],
    bodies: list[dict[str, object]],
    truth: dict[str, dict[str, float]],
) -> None:
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        got = response.json()
        want = truth[str(body["text"])]
        assert got["label"] == max(want, key=want.__getitem__)
        assert np.allclose([got["scores"][k] for k in want], list(want.values()), atol=1e-4)


# ---------------------------------------------------------------------------------- tests


def test_300_concurrent_requests_all_answered_correctly(
    tmp_path: Path, tiny_bundle: Path, servers: list[Server]
) -> None:
    server = start(tmp_path, tiny_bundle)
    servers.append(server)
    bodies: list[dict[str, object]] = [{"text": TEXTS[i % len(TEXTS)]} for i in range(300)]
    responses = asyncio.run(fire(server.url, bodies, limit=300))
    check_answers(responses, bodies, expected(tiny_bundle, TEXTS))
    ok = 'sentiment_requests_total{method="POST",model="tiny-test",route="/predict",status="200"}'
    assert server.settled_metric(ok, 300) == 300


def test_tiny_queue_under_load_gives_503s_and_nothing_else(
    tmp_path: Path, sluggish_bundle: Path, servers: list[Server]
) -> None:
    server = start(
        tmp_path, sluggish_bundle, SENTIMENT_QUEUE_SIZE="4", SENTIMENT_MAX_TEXTS="4",
        SENTIMENT_MAX_BATCH="2",
    )  # fmt: skip
    servers.append(server)
    truth = expected(sluggish_bundle, TEXTS)
    rss = []
    for _ in range(4):  # sustained overload: memory must not keep growing
        bodies: list[dict[str, object]] = [{"text": TEXTS[i % len(TEXTS)]} for i in range(200)]
        responses = asyncio.run(fire(server.url, bodies, limit=200))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503}, sorted(set(codes))
        assert 0 < codes.count(200) < 200 and codes.count(503) > 0
        ok = [(b, r) for b, r in zip(bodies, responses, strict=True) if r.status_code == 200]
        check_answers([r for _, r in ok], [b for b, _ in ok], truth)
        for response in responses:
            if response.status_code == 503:
                assert response.json()["error"]["type"] == "overloaded"  # refused at the door
                # whole seconds, growing with the overload (service/backoff.py), bounded
                assert 1 <= int(response.headers["retry-after"]) <= CEILING_S
        rss.append(server.metric("process_resident_memory_bytes"))
    assert rss[-1] - rss[1] < 40e6, rss  # flat after the first round (allocator warm-up)
    assert server.metric("sentiment_queue_depth") == 0


def _read_until_closed(sock: socket.socket, limit_s: float) -> bytes:
    """Everything the server sends until it closes the connection (or `limit_s` passes)."""
    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        return data + b"<still open>"
    return data


def test_unfinished_headers_are_timed_out_and_normal_clients_are_served(
    tmp_path: Path, tiny_bundle: Path, servers: list[Server]
) -> None:
    """Slowloris: a connection that sends nothing is closed, one with half a request gets a
    408 and is closed, after SENTIMENT_HEADER_TIMEOUT_S; a client that finishes its headers in
    time, even in pieces, is answered."""
    server = start(tmp_path, tiny_bundle, SENTIMENT_HEADER_TIMEOUT_S="0.5")
    servers.append(server)
    silent = socket.create_connection(("127.0.0.1", server.port))
    partial = socket.create_connection(("127.0.0.1", server.port))
    partial.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-")
    body = json.dumps({"text": TEXTS[0]}).encode()
    pieces = socket.create_connection(("127.0.0.1", server.port))
    for chunk in (b"POST /predict HTTP/1.1\r\nHost: x\r\n", b"content-type: application/json\r\n"):
        pieces.sendall(chunk)
        time.sleep(0.1)
    pieces.sendall(b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
    answered = _read_until_closed(pieces, 10)
    assert answered.startswith(b"HTTP/1.1 200"), answered
    timed_out = _read_until_closed(partial, 10)
    assert timed_out.startswith(b"HTTP/1.1 408"), timed_out
    assert json.loads(timed_out.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "request_timeout"
    assert _read_until_closed(silent, 10) == b""  # closed without a word
    for sock in (silent, partial, pieces):
        sock.close()
    assert httpx.post(server.url + "/predict", json={"text": TEXTS[0]}).status_code == 200


def test_concurrent_large_inputs_are_answered_or_refused_and_nothing_else(
    tmp_path: Path, tiny_bundle: Path, servers: list[Server]
) -> None:
    """40 clients at once, each near every limit (64 texts of ~1 KB, bodies just under the
    64 KiB cap) or just over it: each gets a 200 with the right answers, a 503 for a full
    queue or a 413, never a 5xx; the worker stays healthy and the queue drains to zero."""
    server = start(tmp_path, tiny_bundle, SENTIMENT_QUEUE_SIZE="256")
    servers.append(server)
    truth = expected(tiny_bundle, TEXTS)
    long_texts = [
        ((TEXTS[i % len(TEXTS)] + " ") * 64)[:1000] for i in range(64)
    ]  # cut to max_length
    fits: dict[str, object] = {"texts": long_texts[:60]}
    over: dict[str, object] = {"texts": long_texts + long_texts}  # 128 texts: over the limit
    assert 50_000 < len(json.dumps(fits)) < 65536 < len(json.dumps(over))  # around the body cap
    bodies = [over if i % 5 == 4 else fits for i in range(40)]
    responses = asyncio.run(fire(server.url, bodies, limit=40))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 413, 503}, sorted(set(codes))
    assert codes.count(413) == 8 and codes.count(200) > 0
    want = expected(tiny_bundle, long_texts[:60])
    for response in (r for r in responses if r.status_code == 200):
        for text, got in zip(long_texts[:60], response.json()["predictions"], strict=True):
            assert got["label"] == max(want[text], key=want[text].__getitem__)
    after = [{"text": TEXTS[0]}]
    check_answers(asyncio.run(fire(server.url, after, 1)), after, truth)  # type: ignore[arg-type]
    assert server.settled_metric("sentiment_queue_depth", 0) == 0
    assert httpx.get(server.url + "/ready").status_code == 200


@pytest.mark.parametrize("signals", [1, 2], ids=["one-sigterm", "second-sigterm-while-draining"])
def test_sigterm_during_load_loses_no_accepted_request(
    signals: int, tmp_path: Path, sluggish_bundle: Path, servers: list[Server]
) -> None:
    """A supervisor that repeats SIGTERM (an impatient operator, a second `docker stop`) does
    not cut the drain short: only SIGKILL (or a second Ctrl-C, SIGINT) does."""
    # The /ready probe below opens a new connection after SIGTERM: it must land inside the
    # drain delay, with margin for a loaded CI machine (uvicorn closes a connection that has
    # not sent its request yet once the listener closes).
    server = start(tmp_path, sluggish_bundle, SENTIMENT_DRAIN_DELAY_S="3", SENTIMENT_MAX_BATCH="2")
    servers.append(server)
    truth = expected(sluggish_bundle, TEXTS)
    bodies: list[dict[str, object]] = [{"text": TEXTS[i % len(TEXTS)]} for i in range(120)]

    async def scenario() -> tuple[list[httpx.Response], int]:
        load = asyncio.ensure_future(fire(server.url, bodies, limit=120))
        async with httpx.AsyncClient(base_url=server.url) as probe:
            while True:  # every request accepted by the app (running or answered)?
                metrics = (await probe.get("/metrics")).text
                accepted = _value(metrics, "sentiment_requests_in_progress") - 1
                done = _value(metrics, "sentiment_requests_total", 'route="/predict"')
                if accepted + done >= len(bodies):
                    break
                await asyncio.sleep(0.01)
        assert done < len(bodies), "the load finished before SIGTERM: the model is too fast"
        server.process.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=server.url) as probe:
            ready = (await probe.get("/ready")).status_code  # still listening, but draining
        for _ in range(signals - 1):
            server.process.send_signal(signal.SIGTERM)
        return await load, ready

    responses, ready = asyncio.run(scenario())
    assert ready == 503
    check_answers(responses, bodies, truth)
    assert server.process.wait(timeout=60) == 0, server.logs()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health")


def _value(metrics: str, name: str, must: str = "") -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name) and must in line and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_workers_serve_and_share_metrics(
    tmp_path: Path, tiny_bundle: Path, servers: list[Server]
) -> None:
    server = start(tmp_path, tiny_bundle, "--workers", "2")
    servers.append(server)
    bodies: list[dict[str, object]] = [{"text": TEXTS[i % len(TEXTS)]} for i in range(100)]
    responses = asyncio.run(fire(server.url, bodies, limit=50))
    check_answers(responses, bodies, expected(tiny_bundle, TEXTS))
    ok = 'sentiment_requests_total{method="POST",model="tiny-test",route="/predict",status="200"}'
    assert server.settled_metric(ok, 100) == 100
    for _ in range(5):  # whichever worker answers /metrics, it reports both workers' traffic
        assert server.metric(ok) == 100
    info = httpx.get(server.url + "/info").json()
    assert info["runtime"]["workers"] == 2
    # each worker logs its own start; the supervising parent is not one of them
    workers = set(re.findall(r"Started server process \[(\d+)\]", server.logs()))
    assert len(workers) == 2 and str(server.process.pid) not in workers, server.logs()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0, server.logs()


def test_logs_are_json_lines(tmp_path: Path, tiny_bundle: Path, servers: list[Server]) -> None:
    server = start(tmp_path, tiny_bundle)
    servers.append(server)
    httpx.post(server.url + "/predict", json={"text": "good"})
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=30)
    lines = [json.loads(line) for line in server.logs().splitlines() if line.strip()]
    assert any(line["msg"] == "ready" for line in lines)
    access = [line for line in lines if line["logger"] == "service.access"]
    predict = [line for line in access if line["path"] == "/predict"]
    assert len(predict) == 1 and predict[0]["status"] == 200 and predict[0]["method"] == "POST"


def test_refuses_to_start_on_an_altered_bundle_or_bad_settings(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    altered = build_bundle(tmp_path / "altered")
    (altered / "config.json").write_text(
        (altered / "config.json").read_text().replace("tiny-test", "evil")
    )
    server = start(tmp_path, altered, wait=False)
    assert server.process.wait(timeout=60) == 2
    assert "config.json: sha256 does not match the manifest" in server.logs()
    server = start(tmp_path, tiny_bundle, wait=False, SENTIMENT_MAX_BATCH="zero")
    assert server.process.wait(timeout=60) == 2
    assert "SENTIMENT_MAX_BATCH='zero'" in server.logs()


def test_serves_several_bundles_by_name(
    tmp_path: Path, tiny_bundle: Path, servers: list[Server]
) -> None:
    three = build_bundle(tmp_path / "three", labels=["a", "b", "c"], model_name="tiny-3class")
    server = start(tmp_path, [three, tiny_bundle])
    servers.append(server)
    default = httpx.post(server.url + "/predict", json={"text": "good"}).json()
    assert default["model"] == "tiny-3class" and list(default["scores"]) == ["a", "b", "c"]
    named = {"texts": ["good", "bad"], "model": "tiny-test"}
    many = httpx.post(server.url + "/predict", json=named).json()
    assert many["model"] == "tiny-test" and [p["label"] for p in many["predictions"]] == [
        "Positive",
        "Negative",
    ]
    info = httpx.get(server.url + "/info").json()
    assert [m["name"] for m in info["models"]] == ["tiny-3class", "tiny-test"]
    ready = [json.loads(x) for x in server.logs().splitlines() if '"msg": "ready"' in x]
    assert [m["model"] for m in ready[0]["models"]] == ["tiny-3class", "tiny-test"]


def test_refuses_to_start_on_two_bundles_with_one_name_or_disagreeing_settings(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    twin = build_bundle(tmp_path / "twin")  # also named tiny-test
    server = start(tmp_path, [tiny_bundle, twin], wait=False)
    assert server.process.wait(timeout=60) == 2
    assert "two bundles are named 'tiny-test'" in server.logs()
    server = start(tmp_path, twin, wait=False, SENTIMENT_BUNDLES=str(tiny_bundle))
    assert server.process.wait(timeout=60) == 2
    assert "disagree: set only SENTIMENT_BUNDLES" in server.logs()


# ------------------------------------------------------------------------- reload (SIGHUP)


def wait_for_log(server: Server, needle: str, count: int = 1) -> None:
    deadline = time.monotonic() + 60
    while server.logs().count(needle) < count:
        assert server.process.poll() is None, f"server exited:\n{server.logs()}"
        assert time.monotonic() < deadline, f"no {needle!r} x{count}:\n{server.logs()}"
        time.sleep(0.02)


def worker_pids(server: Server) -> set[str]:
    return set(re.findall(r"Started server process \[(\d+)\]", server.logs()))


def test_sighup_swaps_in_a_replaced_bundle_without_a_restart(
    tmp_path: Path, servers: list[Server]
) -> None:
    bundle = build_bundle(tmp_path / "bundle")
    server = start(tmp_path, bundle)
    servers.append(server)
    old = version(bundle)
    (bundle / "model.onnx").write_bytes(b"tampered")  # fails its manifest: refused, logged
    server.process.send_signal(signal.SIGHUP)
    wait_for_log(server, "reload refused, the old models keep serving")
    assert server.settled_metric('sentiment_reloads_total{outcome="failed"}', 1) == 1
    kept = httpx.post(server.url + "/predict", json={"text": "good"})
    assert kept.headers["x-model-version"] == old and kept.json()["label"] == "Positive"
    replace_bundle(bundle, labels=NEW_LABELS)
    server.process.send_signal(signal.SIGHUP)
    seen: list[str] = []  # answered all along: the old model until the new one is warm
    deadline = time.monotonic() + 60
    while not seen or seen[-1] != version(bundle):
        assert time.monotonic() < deadline, (seen[-3:], server.logs())
        response = httpx.post(server.url + "/predict", json={"text": "good"})
        assert response.status_code == 200, response.text
        seen.append(response.headers["x-model-version"])
    assert response.json()["label"] == "Good"
    assert set(seen) <= {old, version(bundle)} and seen == sorted(seen, key=seen.index)
    assert server.settled_metric('sentiment_reloads_total{outcome="ok"}', 1) == 1
    assert worker_pids(server) == {str(server.process.pid)}  # the same process throughout
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0, server.logs()


def test_sighup_to_the_parent_reloads_every_worker_in_place(
    tmp_path: Path, servers: list[Server]
) -> None:
    bundle = build_bundle(tmp_path / "bundle")
    server = start(tmp_path, bundle, "--workers", "2")
    servers.append(server)
    wait_for_log(server, '"msg": "ready"', 2)
    workers = worker_pids(server)
    replace_bundle(bundle, labels=NEW_LABELS)
    server.process.send_signal(signal.SIGHUP)
    wait_for_log(server, '"msg": "reloaded"', 2)  # one per worker
    assert server.settled_metric('sentiment_reloads_total{outcome="ok"}', 2) == 2
    bodies: list[dict[str, object]] = [{"text": "good"}] * 40
    responses = asyncio.run(fire(server.url, bodies, limit=20))
    assert {r.headers["x-model-version"] for r in responses} == {version(bundle)}
    assert worker_pids(server) == workers, server.logs()  # reloaded in place, not restarted
    assert "Terminated child process" not in server.logs()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0, server.logs()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_sighup_during_start_up_waits_for_the_models(
    workers: str, tmp_path: Path, sluggish_bundle: Path, servers: list[Server]
) -> None:
    """SIGHUP's default action ends a process: one sent while the models load must wait."""
    server = start(tmp_path, sluggish_bundle, "--workers", workers, wait=False)
    servers.append(server)
    wait_for_log(server, "Waiting for application startup", int(workers))
    # every worker has its SIGHUP latch; one may be ready already (workers start a moment
    # apart), the last one to start is still loading its models
    ready = server.logs().count('"msg": "ready"')
    assert ready < int(workers), "loaded too fast to test this"
    server.process.send_signal(signal.SIGHUP)
    wait_ready(server)
    wait_for_log(server, "reload: every bundle unchanged", int(workers))
    assert len(worker_pids(server)) == int(workers), server.logs()  # none was restarted
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0, server.logs()
