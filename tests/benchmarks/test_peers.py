"""The peers answer like our API, and compute what their model computes."""

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette

from benchmarks import engine
from benchmarks.peers.common import make_app, scores_to_result
from benchmarks.peers.optimum_ort import peer_deps_missing, prepare_model_dir
from service.bundle import load_bundle
from service.engine import pad_right

LABELS = ["Negative", "Positive"]


def call(app: Starlette, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to the ASGI app in process (no server, no port)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://peer") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_handler_rejects_bad_input_with_json_4xx() -> None:
    app = make_app(lambda text: scores_to_result(LABELS, [0.25, 0.75]))
    ok = call(app, "POST", "/predict", json={"text": "hi"})
    assert ok.status_code == 200
    assert ok.json() == {
        "label": "Positive",
        "score": 0.75,
        "scores": {"Negative": 0.25, "Positive": 0.75},
    }
    for body, status in (
        (b"{not json", 400),
        (b'{"text": ""}', 422),
        (b'{"txt": "a"}', 422),
        (b"[1]", 422),
        (b'{"text": 5}', 422),
    ):
        response = call(app, "POST", "/predict", content=body)
        assert response.status_code == status and "error" in response.json()
    assert call(app, "POST", "/predict", json={"text": "x" * 10_001}).status_code == 413
    assert call(app, "GET", "/ready").status_code == 200


def reference_probabilities(bundle_dir: Path, text: str) -> list[float]:
    bundle = load_bundle(bundle_dir)
    tokenizer = engine.load_tokenizer(bundle.tokenizer_path, bundle.max_length)
    session = engine.make_session(bundle.model_path, 1)
    logits = session.run(
        None, engine.make_feed(session, *pad_right([tokenizer.encode(text).ids], 0))
    )
    exp = np.exp(logits[0][0] - logits[0][0].max())
    return [float(p) for p in exp / exp.sum()]


@pytest.mark.slow
@pytest.mark.skipif(peer_deps_missing() is not None, reason=str(peer_deps_missing()))
def test_optimum_peer_matches_the_onnx_model(tiny_bundle: Path, tmp_path: Path) -> None:
    from benchmarks.peers.optimum_ort import load_predictor

    folder = prepare_model_dir(
        tiny_bundle / "model.onnx",
        tiny_bundle / "tokenizer.json",
        LABELS,
        None,
        tmp_path / "optimum",
    )
    predict = load_predictor(folder, max_length=32)
    for text in ("I love this game", "worst update, I hate it"):
        result = predict(text)
        expected = reference_probabilities(tiny_bundle, text)
        assert [result["scores"][label] for label in LABELS] == pytest.approx(expected, abs=1e-5)
        assert result["label"] == LABELS[int(np.argmax(expected))]


@pytest.mark.slow
def test_seed_peer_serves_a_tf_checkpoint(tiny_checkpoint: Path) -> None:
    from benchmarks.peers.seed_tf import load_predictor

    app = make_app(load_predictor(tiny_checkpoint))
    body = call(app, "POST", "/predict", json={"text": "I love this game"}).json()
    assert set(body) == {"label", "score", "scores"}
    assert sum(body["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["score"] == max(body["scores"].values())
