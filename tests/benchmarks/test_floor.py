"""The floor under HTTP ÷ engine: the stub bundle, the contract app, the bare app, the ceiling
and its table."""

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from benchmarks import floor
from service.api import load
from service.bundle import load_bundle


def test_the_stub_keeps_the_bundles_contract_and_only_swaps_the_graph(
    pair_bundle: Path, tmp_path: Path
) -> None:
    stub = floor.stub_bundle(load_bundle(pair_bundle), tmp_path / "stub")
    for name in ("config.json", "tokenizer.json"):
        assert (stub / name).read_bytes() == (pair_bundle / name).read_bytes()
    ops = [node.op_type for node in onnx.load(stub / "model.onnx").graph.node]
    assert ops == ["Gather", "ReduceMean"]
    with load(stub) as model:  # verified against its manifest, served like any bundle
        predictions = model.predict(["I love this game", "worst update"], ["Game", None])
    assert len(predictions) == 2
    for prediction in predictions:
        assert prediction.label in model.labels
        assert np.isclose(sum(prediction.scores.values()), 1.0, atol=1e-4)


def test_a_slow_stub_answers_as_the_stub_after_its_busy_work(
    pair_bundle: Path, tmp_path: Path
) -> None:
    bundle = load_bundle(pair_bundle)
    quick = floor.stub_bundle(bundle, tmp_path / "quick")
    slow = floor.stub_bundle(bundle, tmp_path / "slow", matmuls=3)
    ops = [node.op_type for node in onnx.load(slow / "model.onnx").graph.node]
    assert ops.count("MatMul") == 3
    texts, entities = ["I love this game", "worst update"], ["Game", None]
    with load(quick) as fast_model, load(slow) as slow_model:
        want = fast_model.predict(texts, entities)
        got = slow_model.predict(texts, entities)
    for a, b in zip(got, want, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


def _asgi(
    scope: dict[str, Any], incoming: list[dict[str, Any]], app: Any = floor.bare_app
) -> list[dict[str, Any]]:
    """What `app` sends for `scope`, given the messages it receives, in order."""
    sent: list[dict[str, Any]] = []
    queue = list(incoming)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert not queue  # every message was read: the whole body, both lifespan events
    return sent


def test_the_bare_app_reads_the_whole_body_and_answers_its_fixed_json() -> None:
    body = [
        {"type": "http.request", "body": b'{"text":', "more_body": True},
        {"type": "http.request", "body": b'"x"}', "more_body": False},
    ]
    start, answer = _asgi({"type": "http", "method": "POST", "path": "/predict"}, body)
    assert start["status"] == 200
    assert dict(start["headers"])[b"content-length"] == str(len(floor.BARE_BODY)).encode()
    assert answer == {"type": "http.response.body", "body": floor.BARE_BODY}


def test_the_bare_app_starts_and_stops_with_the_server() -> None:
    events = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = _asgi({"type": "lifespan"}, events)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_the_contract_app_answers_as_the_service_does(pair_bundle: Path) -> None:
    """Same engine, same answer: its cost is the cost of the service's own work."""
    app = floor.ContractApp(pair_bundle, workers=2)
    scope = {"type": "http", "method": "POST", "path": "/predict"}
    requests = [{"text": "so sad 😭💔 http://t.co/x", "entity": "Game"}, {"text": "I love it"}]
    with load(pair_bundle) as model:
        for request in requests:
            chunks = json.dumps(request).encode()
            body = [
                {"type": "http.request", "body": chunks[:7], "more_body": True},
                {"type": "http.request", "body": chunks[7:], "more_body": False},
            ]
            start, answer = _asgi(scope, body, app)
            got = json.loads(answer["body"])
            assert dict(start["headers"])[b"content-length"] == str(len(answer["body"])).encode()
            (want,) = model.predict([request["text"]], [request.get("entity")])
            assert got["label"] == want.label and got["model"] == model.name
            assert got["scores"] == pytest.approx(want.scores, abs=1e-4)
    app.pool.shutdown()


def test_the_ceiling_is_the_engines_share_of_a_requests_core_time() -> None:
    # 1,000 texts/s on 2 cores: 2,000 µs of core per text; 250 µs besides: 2000 / 2250
    assert floor.ceiling(1000.0, 2, 250.0) == pytest.approx(0.889, abs=1e-3)
    assert floor.ceiling(1000.0, 2, 0.0) == 1.0
    assert floor.ceiling(2000.0, 2, 250.0) < floor.ceiling(1000.0, 2, 250.0)  # faster engine


def _stub_run(name: str, rps: float, cpu: float, loop: float, client: float) -> dict[str, Any]:
    return {
        "name": name,
        "rps": rps,
        "errors": 0,
        "cpu_us_per_request": cpu,
        "loop_cpu_us_per_request": loop,
        "client_cpu_us_per_request": client,
    }


def test_the_section_puts_each_servers_ceiling_beside_its_measured_ratio() -> None:
    plan = [{"max_batch": 1, "sessions": 2, "threads": 1, "texts_per_s": 900.0}]
    results = {
        "engine": {"service_plan": plan, "service_plan_after": {**plan[0], "texts_per_s": 1100.0}},
        "floor": {
            "concurrency": 500,
            "notes": ["contract app, the model: 3 errors"],
            "runs": [
                _stub_run(floor.OURS, 3500.0, 250.0, 180.0, 50.0),
                _stub_run(floor.CONTRACT, 9000.0, 100.0, 70.0, 50.0),
                _stub_run(floor.CONTRACT_MODEL, 930.0, 2100.0, 90.0, 60.0),
                _stub_run(floor.BARE, 30000.0, 30.0, 30.0, 40.0),
            ],
        },
        "workloads": {
            "runs": [
                {
                    "workload": "semeval",
                    "http_vs_engine": {"ratio_to_plan": 0.7, "plan_texts_per_s": 1000.0},
                }
            ]
        },
    }
    lines = floor.section(results)
    assert lines[0] == "## The floor under HTTP ÷ engine"
    assert "- contract app, the model: 3 errors" in lines
    rows = [line for line in lines if line.startswith("| semeval")]
    # mean plan 1,000 texts/s on 2 cores: 2,000 µs per text; ceilings 2000 / (2000 + CPU), then
    # 2000 / (2000 + CPU + the load generator's CPU)
    assert rows == [
        "| semeval | ours | 500 | 3,500 | 250.0 | 180.0 | 0.889 | 50.0 | 0.87 | 0.7 | 2,000 |",
        "| semeval | contract app | 500 | 9,000 | 100.0 | 70.0 | 0.952 | 50.0 | 0.93 | 0.93 | 2,000 |",
        "| semeval | bare app | 500 | 30,000 | 30.0 | 30.0 | 0.985 | 40.0 | 0.966 | – | 2,000 |",
    ]


def test_a_floor_from_an_older_report_has_no_load_generator_ceiling() -> None:
    old = _stub_run(floor.OURS, 1.0, 250.0, 1.0, 50.0)
    del old["client_cpu_us_per_request"]  # reports before the load generator's column
    rows = floor._rows(
        {"engine": {"service_plan": [{"max_batch": 1, "sessions": 2, "threads": 1}]}},
        {"workload": "te", "http_vs_engine": {"ratio_to_plan": 0.9, "plan_texts_per_s": 1000.0}},
        {"concurrency": 500, "runs": [old]},
    )
    assert rows[0][6:9] == [0.889, None, None]


def test_no_floor_measured_no_section() -> None:
    assert floor.section({"workloads": {"runs": [{"workload": "semeval"}]}}) == []
