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
from service.engine import Engine, pad_right
from tests.service.tiny_bundle import build_bundle

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
    with_entity = call(app, "POST", "/predict", json={"text": "hi", "entity": "Nvidia"})
    assert with_entity.status_code == 422  # a text-only peer does not drop what it cannot read


def test_a_pair_peer_gets_the_entity_or_none() -> None:
    seen: list[tuple[str, str | None]] = []

    def pairs(text: str, entity: str | None) -> dict[str, Any]:
        seen.append((text, entity))
        return scores_to_result(LABELS, [0.5, 0.5])

    app = make_app(pairs=pairs)
    assert call(app, "POST", "/predict", json={"text": "hi", "entity": "Nvidia"}).is_success
    assert call(app, "POST", "/predict", json={"text": "hi"}).is_success
    assert seen == [("hi", "Nvidia"), ("hi", None)]
    bad = call(app, "POST", "/predict", json={"text": "hi", "entity": 3})
    assert bad.status_code == 422 and "entity" in bad.json()["error"]
    with pytest.raises(ValueError):
        make_app()


def reference_probabilities(bundle_dir: Path, text: str, entity: str | None = None) -> list[float]:
    """What our engine computes for the text (with its entity, normalised as declared)."""
    engine_ = Engine(load_bundle(bundle_dir), threads=1)
    ids = engine_.encode([text], None if entity is None else [entity])[0].ids
    session = engine.make_session(engine_.bundle.model_path, 1)
    logits = session.run(None, engine.make_feed(session, *pad_right([ids], 0)))
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
        result = predict(text, None)
        expected = reference_probabilities(tiny_bundle, text)
        assert [result["scores"][label] for label in LABELS] == pytest.approx(expected, abs=1e-5)
        assert result["label"] == LABELS[int(np.argmax(expected))]


@pytest.mark.slow
@pytest.mark.skipif(peer_deps_missing() is not None, reason=str(peer_deps_missing()))
def test_the_optimum_peer_serves_the_bundles_input_contract(tmp_path: Path) -> None:
    """Normalised text, read with its entity (an empty one when none), cut to fit: the same
    ids as our engine, so the same answers."""
    from benchmarks.peers.optimum_ort import load_predictor

    bundle = build_bundle(tmp_path / "b", text_pair=True, preprocess="tweet-1", max_length=12)
    folder = prepare_model_dir(
        bundle / "model.onnx", bundle / "tokenizer.json", LABELS, None, tmp_path / "optimum"
    )
    predict = load_predictor(folder, 12, preprocess="tweet-1", text_pair=True)
    cases = [
        ("I love this game http://t.co/x @bob", "game"),
        ("worst update, I hate it &amp; bad bad bad bad bad bad bad", None),  # cut to 12
    ]
    for text, entity in cases:
        result = predict(text, entity)
        expected = reference_probabilities(bundle, text, entity)
        assert [result["scores"][label] for label in LABELS] == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_seed_peer_serves_a_tf_checkpoint(tiny_checkpoint: Path) -> None:
    from benchmarks.peers.seed_tf import load_predictor

    app = make_app(load_predictor(tiny_checkpoint))
    body = call(app, "POST", "/predict", json={"text": "I love this game"}).json()
    assert set(body) == {"label", "score", "scores"}
    assert sum(body["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["score"] == max(body["scores"].values())
