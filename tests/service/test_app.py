"""Every endpoint and every error path, in process (Starlette TestClient / httpx ASGI)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from service import Settings, create_app
from service.app import Handlers, ServiceState
from service.backoff import RetryAfter
from service.bundle import BundleError
from service.engine import Probs
from service.errors import ApiError
from service.lifecycle import EXECUTOR_GRACE_S, EXIT_FAILED, WATCHDOG_S, Supervisor

JSON = {"content-type": "application/json"}
pytestmark = pytest.mark.timeout(60)


def error_of(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    assert body["error"]["message"]
    error: dict[str, str] = body["error"]
    return error


def without_model(prediction: dict[str, Any]) -> dict[str, Any]:
    """A single answer as it appears in a batch (the batch names its model once, at the top)."""
    return {k: v for k, v in prediction.items() if k != "model"}


# ----------------------------------------------------------------------------- happy paths


def test_single_text(client: TestClient) -> None:
    response = client.post("/predict", json={"text": "I love this game"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"label", "score", "scores", "truncated", "model"}
    assert body["model"] == "tiny-test"  # the only (so the default) model
    assert body["label"] == "Positive" and body["truncated"] is False
    assert list(body["scores"]) == ["Negative", "Positive"]  # bundle order
    assert body["score"] == body["scores"]["Positive"] == max(body["scores"].values())
    assert abs(sum(body["scores"].values()) - 1) < 1e-5


def test_many_texts_in_input_order_equal_single_requests(client: TestClient) -> None:
    texts = ["I hate this", "I love this", "the game", "great " * 40, "sad update", "best"]
    response = client.post("/predict", json={"texts": texts})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions[:2]] == ["Negative", "Positive"]
    for text, batched in zip(texts, predictions, strict=True):
        single = client.post("/predict", json={"text": text}).json()
        assert single["label"] == batched["label"]
        assert single["truncated"] == batched["truncated"]
        for label, score in single["scores"].items():
            assert abs(score - batched["scores"][label]) <= 1e-4


def test_long_input_is_truncated_and_says_so(client: TestClient) -> None:
    body = client.post("/predict", json={"text": "awful " * 500}).json()
    assert body["truncated"] is True and body["label"] == "Negative"
    assert client.post("/predict", json={"text": "awful"}).json()["truncated"] is False


def test_large_inputs_are_tokenized_off_the_loop_with_the_same_answer(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings())
    with TestClient(app) as client:
        engine: Any = app.state.service.registry.default.engine
        on_loop: list[bool] = []
        encode = engine.encode

        def spy(texts: Sequence[str], entities: Sequence[str] | None = None) -> Any:
            try:
                asyncio.get_running_loop()
                on_loop.append(True)
            except RuntimeError:
                on_loop.append(False)
            return encode(texts, entities)

        engine.encode = spy
        long_text = "I love it " + "x " * 2500  # over the inline tokenization threshold (1024)
        texts = [long_text, "I love it"]
        predictions = client.post("/predict", json={"texts": texts}).json()["predictions"]
        assert predictions[0]["truncated"] and not predictions[1]["truncated"]
        # the first max_length tokens are what counts: same answer as the cut text sent alone
        cut = client.post("/predict", json={"text": "I love it " + "x " * 11}).json()
        assert not cut["truncated"]
        assert cut["scores"] == pytest.approx(predictions[0]["scores"], abs=1e-4)
        assert on_loop == [False, True]  # big input in a thread, a tweet inline


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json"],
)
def test_json_content_type_variants_are_accepted(client: TestClient, content_type: str) -> None:
    body = json.dumps({"text": "happy"}).encode()
    assert client.post("/predict", content=body, headers={"content-type": content_type}).is_success


def test_unicode_text_is_fine(client: TestClient) -> None:
    for text in ["😀 love", "naïve café", "中文 good", "\u0000 nul", "🙂" * 200]:
        assert client.post("/predict", json={"text": text}).status_code == 200, text


def test_probes_and_info(client: TestClient, tiny_bundle: Path) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.head("/health").status_code == 200
    assert client.get("/ready").json() == {"status": "ready"}
    info = client.get("/info").json()
    assert info["model_name"] == "tiny-test" and info["labels"] == ["Negative", "Positive"]
    assert info["max_length"] == 16 and "mode" not in info
    manifest = (tiny_bundle / "manifest.json").read_bytes()
    assert info["bundle_sha256"] == hashlib.sha256(manifest).hexdigest()  # as sha256sum prints
    assert info["manifest"]["note"] == "tiny test model" and "files" not in info["manifest"]
    assert {"service", "onnxruntime", "tokenizers", "python"} <= set(info["versions"])


def test_metrics_cover_requests_queue_batches_and_model(client: TestClient) -> None:
    client.post("/predict", json={"texts": ["good", "bad"]})
    client.post("/predict", content=b"{", headers=JSON)
    client.get("/nowhere/at/all")
    text = client.get("/metrics").text
    ok = 'sentiment_requests_total{method="POST",model="tiny-test",route="/predict",status="200"}'
    assert ok + " 1.0" in text
    bad = 'sentiment_requests_total{method="POST",model="",route="/predict",status="400"}'
    assert bad + " 1.0" in text  # no model was chosen
    assert 'route="unmatched",status="404"' in text and "/nowhere" not in text
    assert 'sentiment_request_duration_seconds_count{route="/predict"} 2.0' in text
    model = '{model="tiny-test"}'
    # direct (the default): a request's texts of one length are one batch; warm-up not counted
    assert f"sentiment_batch_size_count{model} 1.0" in text
    assert f"sentiment_queue_wait_seconds_count{model} 1.0" in text
    assert "sentiment_inference_seconds_bucket{le=" in text and 'model="tiny-test"' in text
    assert f"sentiment_queue_depth{model} 0.0" in text
    assert 'sentiment_texts_total{model="tiny-test",truncated="false"} 2.0' in text
    assert 'sentiment_model_info{bundle_sha256="' in text and 'model_name="tiny-test"' in text
    assert "process_resident_memory_bytes" in text


def test_openapi_describes_every_route(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/predict",
        "/health",
        "/ready",
        "/metrics",
        "/info",
        "/openapi.json",
    }
    prediction = document["components"]["schemas"]["Prediction"]
    assert prediction["properties"]["label"]["enum"] == ["Negative", "Positive"]
    assert document["components"]["schemas"]["PredictMany"]["properties"]["texts"]["maxItems"] == 64


def test_plain_model_refuses_entities_and_documents_none(client: TestClient) -> None:
    response = client.post("/predict", json={"text": "I love this", "entity": "game"})
    assert response.status_code == 422 and "takes no entity" in error_of(response)["message"]
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert set(schemas["PredictOne"]["properties"]) == {"text", "model"}
    assert client.get("/info").json()["text_pair"] is False


def test_pair_model_reads_each_texts_entity(
    make_settings: Callable[..., Settings], pair_bundle: Path
) -> None:
    with TestClient(create_app(make_settings(bundle=pair_bundle))) as pair:
        bare = pair.post("/predict", json={"text": "I love this"})
        assert bare.status_code == 200  # no entity: the model reads an empty one
        one = pair.post("/predict", json={"text": "I love this", "entity": "the game"})
        assert one.json()["scores"] != bare.json()["scores"]  # the entity is read
        assert one.status_code == 200 and one.json()["label"] == "Positive"
        items = [{"text": "I love this", "entity": "the game"}, {"text": "awful", "entity": "it"}]
        many = pair.post("/predict", json={"texts": items})
        assert many.status_code == 200
        assert many.json()["predictions"][0] == without_model(one.json())
        assert [p["label"] for p in many.json()["predictions"]] == ["Positive", "Negative"]
        mixed = pair.post("/predict", json={"texts": ["I love this", items[0]]})
        assert mixed.json()["predictions"] == [
            without_model(bare.json()),
            without_model(one.json()),
        ]
        too_long = pair.post("/predict", json={"text": "good", "entity": "game " * 20})
        assert too_long.status_code == 422 and "no room" in error_of(too_long)["message"]
        assert pair.get("/info").json()["text_pair"] is True
        schemas = pair.get("/openapi.json").json()["components"]["schemas"]
        assert set(schemas["PredictOne"]["properties"]) == {"text", "entity", "model"}
        assert schemas["PredictOne"]["required"] == ["text"]
        assert {"$ref": "#/components/schemas/Item"} in schemas["PredictMany"]["properties"][
            "texts"
        ]["items"]["anyOf"]


def test_access_log_is_one_structured_line(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(make_settings(access_log=True))) as client:
        caplog.set_level(logging.INFO, logger="service.access")
        client.post("/predict", json={"text": "good"})
    records = [r for r in caplog.records if r.name == "service.access"]
    assert len(records) == 1
    record: Any = records[0]
    assert (record.method, record.path, record.status) == ("POST", "/predict", 200)
    assert record.ms >= 0


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"not json",
        b'{"text": "a",}',
        b"\xff\xfe{}",  # not UTF-8
        b'{"text": "caf\xe9"}',  # latin-1 byte inside
        b"\xef\xbb\xbf" + b'{"text": "bom"}',
        b"[" * 30000 + b"]" * 30000,  # nests deeper than the parser allows
        b'{"text": "a", "n": ' + b"9" * 5000 + b"}",  # int literal over Python's digit limit
    ],
)
def test_malformed_bodies_are_400(client: TestClient, body: bytes) -> None:
    response = client.post("/predict", content=body, headers=JSON)
    assert response.status_code == 400, response.text
    assert error_of(response)["type"] == "bad_request"


@pytest.mark.parametrize(
    "headers",
    [{}, {"content-type": "text/plain"}, {"content-type": "application/json; charset=latin-1"}],
)
def test_wrong_content_type_is_415(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/predict", content=b'{"text": "good"}', headers=headers)
    assert response.status_code == 415
    assert error_of(response)["type"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({}, "exactly one"),
        ({"text": "a", "texts": ["b"]}, "exactly one"),
        ({"txt": "a"}, "unknown field"),
        ({"text": "a", "extra": 1}, "unknown field"),
        ({"text": 1}, "must be a string"),
        ({"text": None}, "must be a string"),
        ({"text": ["a"]}, "must be a string"),
        ({"text": True}, "must be a string"),
        ({"text": ""}, "empty"),
        ({"text": "  \n\t "}, "empty"),
        ({"text": "\u3000\u2003\x1c"}, "empty"),
        ({"texts": "abc"}, "must be a list"),
        ({"texts": []}, "must not be empty"),
        ({"texts": ["ok", 3]}, "texts[1]"),
        ({"texts": ["ok", " "]}, "texts[1]"),
        ([{"text": "a"}], "JSON object"),
        ("a", "JSON object"),
        (3, "JSON object"),
        (None, "JSON object"),
    ],
)
def test_wrong_shapes_are_422(client: TestClient, payload: Any, needle: str) -> None:
    response = client.post("/predict", content=json.dumps(payload).encode(), headers=JSON)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["type"] == "validation_error" and needle in error["message"]


def test_lone_surrogate_is_422(client: TestClient) -> None:
    response = client.post("/predict", content=b'{"text": "x \\ud800 y"}', headers=JSON)
    assert response.status_code == 422 and "surrogate" in error_of(response)["message"]


def test_oversized_body_and_too_many_texts_are_413(client: TestClient) -> None:
    big = json.dumps({"text": "good " * 14000}).encode()
    assert len(big) > 65536
    response = client.post("/predict", content=big, headers=JSON)
    assert response.status_code == 413 and error_of(response)["type"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield b'{"text": "'
        for _ in range(100):
            yield b"a" * 1000
        yield b'"}'

    response = client.post("/predict", content=chunks(), headers=JSON)
    assert response.status_code == 413

    response = client.post("/predict", json={"texts": ["good"] * 65})
    assert response.status_code == 413 and "limit is 64" in error_of(response)["message"]
    assert client.post("/predict", json={"texts": ["good"] * 64}).status_code == 200


def test_limits_follow_settings(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(max_body_bytes=100, max_texts=2, queue_size=2))
    with TestClient(app) as client:
        assert client.post("/predict", json={"text": "a" * 120}).status_code == 413
        assert client.post("/predict", json={"texts": ["a", "b", "c"]}).status_code == 413
        assert client.post("/predict", json={"texts": ["a", "b"]}).status_code == 200
        document = client.get("/openapi.json").json()
        assert (
            document["components"]["schemas"]["PredictMany"]["properties"]["texts"]["maxItems"] == 2
        )


def test_unknown_route_404_and_wrong_method_405(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and error_of(response)["type"] == "not_found"
    response = client.get("/predict")
    assert response.status_code == 405 and error_of(response)["type"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"
    assert client.post("/health").status_code == 405
    assert client.request("BREW", "/predict").status_code == 405


# ------------------------------------------------------------------------------------ auth


@pytest.fixture
def secured(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(api_key="s3cret-key"))) as client:
        yield client


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", "Basic s3cret-key", "s3cret-key", "Bearer ", "Bearer s3cret"]
)
def test_api_key_guards_predict_and_info(secured: TestClient, header: str | None) -> None:
    headers = {} if header is None else {"authorization": header}
    for response in (
        secured.post("/predict", json={"text": "good"}, headers=headers),
        secured.get("/info", headers=headers),
    ):
        assert response.status_code == 401
        assert error_of(response)["type"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


def test_api_key_accepted_and_probes_stay_open(secured: TestClient) -> None:
    auth = {"authorization": "Bearer s3cret-key"}
    assert secured.post("/predict", json={"text": "good"}, headers=auth).status_code == 200
    assert secured.post("/predict", json={"text": "good"}, headers={"authorization": "bearer s3cret-key"}).is_success  # fmt: skip
    assert secured.get("/info", headers=auth).status_code == 200
    for path in ("/health", "/ready", "/metrics", "/openapi.json"):
        assert secured.get(path).status_code == 200, path
    document = secured.get("/openapi.json").json()
    assert document["paths"]["/predict"]["post"]["security"] == [{"bearer": []}]
    assert "401" in document["paths"]["/info"]["get"]["responses"]


# -------------------------------------------------------------------- readiness and startup


def test_not_ready_before_the_lifespan_ran(make_settings: Callable[..., Settings]) -> None:
    client = TestClient(create_app(make_settings()))  # no `with`: the model never loads
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503
    response = client.post("/predict", json={"text": "good"})
    assert response.status_code == 503 and error_of(response)["type"] == "not_ready"
    assert response.headers["retry-after"] == "1"
    assert client.get("/info").status_code == 503
    assert client.get("/openapi.json").status_code == 200


def test_handlers_answer_alone_around_a_state(make_settings: Callable[..., Settings]) -> None:
    """The endpoints are methods over one ServiceState: no app, server or lifespan needed."""
    state = ServiceState(make_settings(api_key="k"))
    handlers = Handlers(state)
    request = Request({"type": "http", "method": "GET", "path": "/ready", "headers": []})
    assert asyncio.run(handlers.ready(request)).status_code == 503  # loading
    state.ready = True
    assert asyncio.run(handlers.ready(request)).status_code == 200
    state.failed = "stuck"
    assert asyncio.run(handlers.health(request)).status_code == 503
    with pytest.raises(ApiError) as refused:
        asyncio.run(handlers.info(request))  # no Authorization header
    assert refused.value.status == 401


def test_refuses_to_start_on_an_altered_bundle(
    make_settings: Callable[..., Settings], tiny_bundle: Path, tmp_path: Path
) -> None:
    altered = Path(shutil.copytree(tiny_bundle, tmp_path / "altered"))
    (altered / "tokenizer.json").write_text("{}")
    with (
        pytest.raises(BundleError, match=r"tokenizer\.json: sha256 does not match"),
        TestClient(create_app(make_settings(bundle=altered))),
    ):
        pass


def test_unexpected_failures_are_json_500(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())
    with TestClient(app, raise_server_exceptions=False) as client:

        def broken(rows: Sequence[Sequence[int]]) -> Probs:
            raise RuntimeError("model exploded")

        scheduler: Any = app.state.service.registry.default.scheduler
        scheduler._infer = broken
        response = client.post("/predict", json={"text": "good"})
        assert response.status_code == 500
        error = error_of(response)
        assert error["type"] == "internal_error" and "exploded" not in error["message"]
        metrics = client.get("/metrics").text
        assert 'route="/predict",status="500"' in metrics


def test_a_failed_inference_is_logged_once(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings())
    with TestClient(app, raise_server_exceptions=False) as client:

        def broken(rows: Sequence[Sequence[int]]) -> Probs:
            raise RuntimeError("model exploded")

        app.state.service.registry.default.scheduler._infer = broken
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert client.post("/predict", json={"text": "good"}).status_code == 500
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info and "model exploded" in str(errors[0].exc_info[1])


# ------------------------------------------------------------------- overload, in process


class Gate:
    """Wraps the engine's infer: blocks while closed."""

    def __init__(self, infer: Callable[[Sequence[Sequence[int]]], Probs]) -> None:
        self.infer = infer
        self.open = threading.Event()
        self.entered = threading.Event()

    def __call__(self, rows: Sequence[Sequence[int]]) -> Probs:
        self.entered.set()
        self.open.wait(10)
        return self.infer(rows)


@contextlib.asynccontextmanager
async def gated(app: Any) -> AsyncIterator[tuple[Any, Gate, httpx.AsyncClient]]:
    """The app started, its default model's inference behind a closed Gate, and a client."""
    async with app.router.lifespan_context(app):
        scheduler: Any = app.state.service.registry.default.scheduler
        gate = Gate(scheduler._infer)
        scheduler._infer = gate
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield scheduler, gate, client


def test_a_spare_run_is_configured_and_the_service_answers_with_it(
    make_settings: Callable[..., Settings],
) -> None:
    with TestClient(create_app(make_settings(overload_spare=1, pool_size=1))) as client:
        pool = client.app.state.service.registry.default.scheduler._executor  # type: ignore[attr-defined]
        assert (pool.runs, pool.spare, pool.threads) == (1, 1, 2) and pool.overflow is not None
        answer = client.post("/predict", json={"text": "good"})
    assert answer.status_code == 200 and answer.json()["label"]


def test_full_queue_and_timeouts_are_fast_503s(make_settings: Callable[..., Settings]) -> None:
    app = create_app(
        make_settings(queue_size=2, max_texts=2, request_timeout_s=0.3, max_batch=1, pool_size=1)
    )

    async def go() -> list[httpx.Response]:
        async with gated(app) as (scheduler, gate, client):
            first = asyncio.ensure_future(client.post("/predict", json={"text": "good"}))
            await asyncio.to_thread(gate.entered.wait, 5)
            second = asyncio.ensure_future(client.post("/predict", json={"text": "bad"}))
            while scheduler.depth < 2:  # both admitted: one running, one queued
                await asyncio.sleep(0.005)
            full = await client.post("/predict", json={"text": "sad"})  # queue: 2 of 2
            timed_out = await second  # waited 0.3 s behind the blocked first one
            gate.open.set()
            done = await first
            after = await client.post("/predict", json={"text": "good"})
            metrics = (await client.get("/metrics")).text
        return [full, timed_out, done, after, httpx.Response(200, text=metrics)]

    full, timed_out, done, after, metrics = asyncio.run(go())
    assert full.status_code == 503 and error_of(full)["type"] == "overloaded"
    assert full.headers["retry-after"] == "1"
    assert timed_out.status_code == 503 and error_of(timed_out)["type"] == "timeout"
    assert done.status_code == 200 and after.status_code == 200
    assert 'sentiment_rejected_total{model="tiny-test",reason="overloaded"} 1.0' in metrics.text
    assert 'sentiment_rejected_total{model="tiny-test",reason="timeout"} 1.0' in metrics.text


def test_a_wait_past_the_keepalive_also_closes_the_connection(
    make_settings: Callable[..., Settings],
) -> None:
    """Told to wait longer than the server keeps an idle connection, a client would send its
    retry on a connection closed meanwhile (a reset): the 503 says `Connection: close`."""
    app = create_app(make_settings(queue_size=1, max_texts=1, max_batch=1, pool_size=1))

    async def go() -> list[httpx.Response]:
        async with gated(app) as (_, gate, client):
            first = asyncio.ensure_future(client.post("/predict", json={"text": "good"}))
            await asyncio.to_thread(gate.entered.wait, 5)
            short = await client.post("/predict", json={"text": "sad"})
            waits = RetryAfter(window_s=3600)  # as after thousands of refusals (no revision)
            waits.seconds = 9
            app.state.service.retry_after = waits
            long = await client.post("/predict", json={"text": "sad"})
            gate.open.set()
            await first
        return [short, long]

    short, long = asyncio.run(go())
    assert short.status_code == long.status_code == 503
    assert short.headers["retry-after"] == "1" and "connection" not in short.headers
    assert 6 <= int(long.headers["retry-after"]) <= 12  # jittered around 9
    assert long.headers["connection"] == "close"  # keepalive_s is 5


def test_a_batch_coupled_model_runs_every_text_alone(
    make_settings: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Answers must not depend on which other texts happen to share a batch."""
    from tests.service.tiny_bundle import build_bundle

    bundle = build_bundle(tmp_path / "coupled", coupled=True)
    texts = ["I love it", "I hate it", "a bad day", "the best game"]  # same length: one batch
    with TestClient(create_app(make_settings(bundle=bundle))) as client:
        runtime = client.get("/info").json()["runtime"]
        assert runtime["max_batch"] == 1 and runtime["batch_drift"] > 1e-3
        batch = client.post("/predict", json={"texts": texts}).json()["predictions"]
        for text, batched in zip(texts, batch, strict=True):
            assert without_model(client.post("/predict", json={"text": text}).json()) == batched
        assert "sentiment_batch_drift" in client.get("/metrics").text
    assert any("every text runs alone" in r.getMessage() for r in caplog.records)
    # the operator accepts the drift; eight texts over max_batch 4 are batched, four by four
    tolerant = make_settings(bundle=bundle, batch_tolerance=1.0, max_batch=4)
    with TestClient(create_app(tolerant)) as client:
        assert client.get("/info").json()["runtime"]["max_batch"] == 4
        body = {"texts": texts + texts}
        drifted = client.post("/predict", json=body).json()["predictions"][:4]
        assert drifted != batch  # what the guard prevents: answers that depend on batch-mates


def test_a_row_independent_model_keeps_batching(client: TestClient) -> None:
    runtime = client.get("/info").json()["runtime"]
    assert runtime["max_batch"] == 16 and runtime["batch_drift"] <= 1e-6


def test_oversubscribed_threads_are_warned_about(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    from service.settings import available_cpus

    too_many = make_settings(threads=available_cpus(), pool_size=2)
    with TestClient(create_app(too_many)):
        pass
    assert any("oversubscribed" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------- internal failures


class RecordingSupervisor(Supervisor):
    """Records what the service asks of its supervisor instead of signalling the test run."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.exits: list[int] = []

    def stop(self) -> None:
        self.stopped.set()

    def exit(self, status: int) -> None:
        self.exits.append(status)


def test_a_stuck_inference_fails_health_and_shutdown_does_not_wait_for_it(
    make_settings: Callable[..., Settings],
) -> None:
    supervisor = RecordingSupervisor()
    settings = make_settings(request_timeout_s=0.3, shutdown_timeout_s=0.6)
    app = create_app(settings, supervisor=supervisor)
    release = threading.Event()
    with TestClient(app, raise_server_exceptions=False) as client:
        scheduler: Any = app.state.service.registry.default.scheduler
        infer = scheduler._infer

        def wedged(rows: Sequence[Sequence[int]]) -> Probs:
            release.wait(30)
            return infer(rows)

        scheduler._infer = wedged
        response = client.post("/predict", json={"text": "good"})
        assert response.status_code == 503  # the stuck request's own bound (2 x timeout)
        assert supervisor.stopped.wait(5), "the watchdog did not notice"
        assert "stuck" in client.get("/health").json()["reason"]
        started = time.perf_counter()
    assert time.perf_counter() - started < EXECUTOR_GRACE_S + 1.5  # not the 30 s wedge
    assert supervisor.exits == [EXIT_FAILED]
    release.set()


def test_a_healthy_service_never_calls_its_supervisor(
    make_settings: Callable[..., Settings],
) -> None:
    """Waited for by the watchdog's own checks, not a sleep: a watchdog that never ran would
    leave the service just as untouched."""
    supervisor = RecordingSupervisor()
    app = create_app(make_settings(), supervisor=supervisor)
    second_check = threading.Event()
    with TestClient(app) as client:
        state = app.state.service
        scheduler: Any = state.registry.default.scheduler
        problem = scheduler.problem
        answers: list[str | None] = []

        def watched() -> str | None:
            answers.append(problem())
            if len(answers) == 2:  # by now the watchdog has acted on the first answer
                second_check.set()
            return answers[-1]

        scheduler.problem = watched
        assert client.post("/predict", json={"text": "good"}).status_code == 200
        assert second_check.wait(20 * WATCHDOG_S), "no second watchdog check"
        assert answers[:2] == [None, None]
        assert state.failed is None and client.get("/health").status_code == 200
        assert not supervisor.stopped.is_set()
    assert supervisor.exits == []  # and the shutdown reports no failure


# ------------------------------------------------------------------- slow and broken clients


async def raw_post(app: Any, chunks: list[bytes], then: str) -> tuple[int, dict[str, str], bytes]:
    """POST /predict over raw ASGI: send `chunks` (more to come), then `then`: "hang" (the
    client goes quiet) or "disconnect"."""
    pending = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        if then == "disconnect":
            return {"type": "http.disconnect"}
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"40")],
    }  # fmt: skip
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body


def test_a_body_that_never_finishes_is_a_408_that_closes_the_connection(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(body_timeout_s=0.2))

    async def go() -> tuple[float, tuple[int, dict[str, str], bytes]]:
        async with app.router.lifespan_context(app):
            start = time.perf_counter()
            result = await raw_post(app, [b'{"text": "go'], then="hang")
            return time.perf_counter() - start, result

    elapsed, (status, headers, body) = asyncio.run(go())
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body)["error"]["type"] == "request_timeout"
    assert 0.2 <= elapsed < 2


def test_a_client_gone_mid_body_is_a_400_not_a_500(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())

    async def go() -> tuple[int, dict[str, str], bytes]:
        async with app.router.lifespan_context(app):
            return await raw_post(app, [b'{"text": "go'], then="disconnect")

    status, _, body = asyncio.run(go())
    assert status == 400 and "disconnected" in json.loads(body)["error"]["message"]


def test_an_overloaded_service_refuses_before_reading_the_body(
    make_settings: Callable[..., Settings],
) -> None:
    """The cheapest rejection: a full queue answers 503 even to a client whose body never
    comes (no read, no parse, no tokenizing)."""
    app = create_app(
        make_settings(queue_size=1, max_texts=1, max_batch=1, pool_size=1, body_timeout_s=5)
    )

    async def go() -> tuple[float, tuple[int, dict[str, str], bytes]]:
        async with gated(app) as (_, gate, client):
            first = asyncio.ensure_future(client.post("/predict", json={"text": "good"}))
            await asyncio.to_thread(gate.entered.wait, 5)
            start = time.perf_counter()
            result = await raw_post(app, [], then="hang")
            elapsed = time.perf_counter() - start
            gate.open.set()
            assert (await first).status_code == 200
        return elapsed, result

    elapsed, (status, headers, body) = asyncio.run(go())
    assert status == 503 and headers["retry-after"] == "1"
    assert json.loads(body)["error"]["type"] == "overloaded"
    assert elapsed < 1  # not the 5 s body timeout: the body was never awaited


def test_the_event_loop_runs_below_the_inference_threads(
    make_settings: Callable[..., Settings],
) -> None:
    """Under overload the loop's parsing and refusing must not take the answers' cores at equal
    weight: once started, its thread is `loop_nice` above the pool's (which keep the process's)."""
    seen: dict[str, Any] = {}

    async def go() -> None:
        app = create_app(make_settings(pool_size=2, loop_nice=5))
        async with app.router.lifespan_context(app):
            seen["loop"] = os.getpriority(os.PRIO_PROCESS, 0)  # this (the loop's) thread
            executor: Any = app.state.service.reloader.executor
            seen["pool"] = {executor.submit(os.getpriority, os.PRIO_PROCESS, 0).result()}
            seen["threads"] = len(executor._threads)

    base = os.getpriority(os.PRIO_PROCESS, 0)
    thread = threading.Thread(target=asyncio.run, args=(go(),))  # keeps pytest's own priority
    thread.start()
    thread.join(60)
    assert seen["pool"] == {base} and seen["threads"] == 2
    assert seen["loop"] == min(19, base + 5)
