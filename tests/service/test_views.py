"""Label views: one bundle, one session, several names (service/bundle.py `views`, the
registry, /info, /metrics, /openapi.json and the scorer)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from service import Settings, create_app
from service.bundle import BundleError, load_bundle
from service.score import ScoreConfig, resolve_bundle, score
from tests.service.tiny_bundle import build_bundle

pytestmark = pytest.mark.timeout(120)
THREE = ["Negative", "Neutral", "Positive"]
TEXTS = ["I love this game", "awful update, servers broken", "the movie is today", "sad ok"]


@pytest.fixture(scope="module")
def general(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("root") / "models" / "general"
    views = {"tiny-binary": ["Negative", "Positive"]}
    return build_bundle(folder, labels=THREE, model_name="tiny-3class", views=views)


@pytest.fixture(scope="module")
def client(general: Path) -> Iterator[TestClient]:
    settings = Settings(bundle=general, threads=1, idle_threads=1, access_log=False)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def predict(client: TestClient, model: str | None, texts: list[str]) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"texts": texts} | ({"model": model} if model else {})
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def test_the_view_is_the_renormalised_full_model(client: TestClient) -> None:
    full = predict(client, "tiny-3class", TEXTS)
    view = predict(client, "tiny-binary", TEXTS)
    for three, two in zip(full, view, strict=True):
        neg, pos = three["scores"]["Negative"], three["scores"]["Positive"]
        assert set(two["scores"]) == {"Negative", "Positive"}
        assert two["scores"]["Negative"] == pytest.approx(neg / (neg + pos), abs=2e-6)
        assert two["scores"]["Positive"] == pytest.approx(pos / (neg + pos), abs=2e-6)
        assert two["label"] == ("Negative" if neg > pos else "Positive")
    assert {p["label"] for p in full} >= {"Negative", "Positive"}


def test_the_default_is_the_full_model_and_a_single_answer_names_the_view(
    client: TestClient,
) -> None:
    assert predict(client, None, TEXTS) == predict(client, "tiny-3class", TEXTS)
    answer = client.post("/predict", json={"text": TEXTS[0], "model": "tiny-binary"}).json()
    assert answer["model"] == "tiny-binary" and set(answer["scores"]) == {"Negative", "Positive"}


def test_info_metrics_and_openapi_show_the_view(client: TestClient) -> None:
    info = client.get("/info").json()
    models = {m["name"]: m for m in info["models"]}
    assert info["default_model"] == "tiny-3class"
    assert models["tiny-binary"]["view_of"] == "tiny-3class"
    assert models["tiny-binary"]["labels"] == ["Negative", "Positive"]
    assert models["tiny-3class"]["view_of"] is None
    assert models["tiny-binary"]["bundle_sha256"] == models["tiny-3class"]["bundle_sha256"]
    metrics = client.get("/metrics").text
    assert (
        'labels="Negative,Positive",max_length="16",model="tiny-binary",model_name="tiny-3class"'
        in metrics
    )
    client.post("/predict", json={"text": "good", "model": "tiny-binary"})
    assert 'model="tiny-binary",route="/predict",status="200"' in client.get("/metrics").text
    spec = json.dumps(client.get("/openapi.json").json())
    assert "tiny-binary" in spec and "tiny-3class" in spec


def test_one_session_serves_both_names(client: TestClient) -> None:
    app: Any = client.app
    registry = app.state.service.registry
    assert len(registry.loaded) == 1 and len(registry) == 2
    assert registry.pick("tiny-binary").engine is registry.pick("tiny-3class").engine


def test_the_scorer_finds_the_view_by_name_and_answers_as_the_api(
    general: Path, client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_bundle("tiny-binary", general.parent) == (general, "tiny-binary")
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out = tmp_path / "out.jsonl"
    monkeypatch.chdir(general.parent.parent)  # the scorer looks names up under ./models
    score(ScoreConfig(input=source, output=out, model="tiny-binary", pool_size=1))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row, answer in zip(rows, predict(client, "tiny-binary", TEXTS), strict=True):
        assert set(row["scores"]) == {"Negative", "Positive"}
        assert row["label"] == answer["label"]
        assert np.allclose(
            [row["scores"][k] for k in ("Negative", "Positive")],
            [answer["scores"][k] for k in ("Negative", "Positive")],
            atol=2e-6,
        )


@pytest.mark.parametrize(
    ("views", "message"),
    [
        ({"b": ["Negative", "Maybe"]}, "two or more distinct labels"),
        ({"b": ["Negative"]}, "two or more distinct labels"),
        ({"b": ["Negative", "Negative"]}, "two or more distinct labels"),
        ({"tiny-3class": ["Negative", "Positive"]}, "the model's own name"),
    ],
)
def test_a_bad_view_is_refused_at_load(tmp_path: Path, views: Any, message: str) -> None:
    folder = build_bundle(tmp_path / "bad", labels=THREE, model_name="tiny-3class", views=views)
    with pytest.raises(BundleError, match=message):
        load_bundle(folder)


def test_a_view_named_like_another_bundle_is_refused_at_start(
    general: Path, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    other = build_bundle(tmp_path / "other", model_name="tiny-binary")
    with (
        pytest.raises(BundleError, match="share a name"),
        TestClient(create_app(make_settings(bundles=(general, other)))),
    ):
        pass
