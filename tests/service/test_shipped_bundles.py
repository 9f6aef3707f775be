"""The committed bundles under models/, loaded by the real service, answer known tweets.

No fixture stands in here: these are the files `make serve` and the image ship.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service import Settings, create_app
from service.bundle import load_bundle
from service.settings import DEFAULT_BUNDLE

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent for p in (REPO / "models").glob("*/manifest.json"))
# Plain tweets whose sentiment no reader would dispute; the entity for entity-pair models.
KNOWN = [
    ("I absolutely love the new update, best game I have played all year!", "Overwatch", "Positive"),
    ("This update is garbage, the servers crash every hour and support ignores us.", "Overwatch", "Negative"),
    ("Thank you so much for the quick fix, you guys are amazing", "Xbox", "Positive"),
    ("Worst customer service ever, I want a refund", "Xbox", "Negative"),
]  # fmt: skip
NEUTRAL = [
    "The store opens at 9am on Monday.",
    "Apple will release its quarterly report on Thursday.",
]
pytestmark = pytest.mark.timeout(120)


def test_the_shipped_bundles_are_the_expected_ones() -> None:
    assert [p.name for p in SHIPPED] == ["sentiment-3class", "sentiment-binary"]


@pytest.fixture(scope="module")
def served() -> Iterator[TestClient]:
    default = REPO / DEFAULT_BUNDLE  # what `make serve` and the image put first
    settings = Settings(
        bundles=(default, *(p for p in SHIPPED if p != default)), threads=1, access_log=False
    )
    with TestClient(create_app(settings)) as client:
        yield client


def predict(client: TestClient, model: str, text: str, entity: str | None) -> dict:
    body: dict[str, str] = {"text": text, "model": model}
    if entity is not None:
        body["entity"] = entity
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("bundle", SHIPPED, ids=lambda p: p.name)
def test_known_tweets(served: TestClient, bundle: Path) -> None:
    info = load_bundle(bundle)
    entity: Callable[[str], str | None] = (lambda e: e) if info.text_pair else (lambda e: None)
    for text, ent, label in KNOWN:
        got = predict(served, bundle.name, text, entity(ent))
        assert got["label"] == label, (text, got)
        assert got["model"] == bundle.name and set(got["scores"]) == set(info.labels)
    if "Neutral" in info.labels:
        for text in NEUTRAL:
            assert predict(served, bundle.name, text, None)["label"] == "Neutral", text


def test_info_describes_every_shipped_bundle(served: TestClient) -> None:
    info = served.get("/info").json()
    assert info["default_model"] == "sentiment-3class"
    models = {m["name"]: m for m in info["models"]}
    assert set(models) == {p.name for p in SHIPPED}
    for path in SHIPPED:
        bundle = load_bundle(path)
        model = models[path.name]
        assert model["text_pair"] is bundle.text_pair and model["labels"] == list(bundle.labels)
        assert model["manifest"]["quantization"]["scheme"] in ("static-int8", "rowwise-int8")
        # batch-invariant int8: the start-up probe finds no drift, so the model batches
        assert model["batch_drift"] <= 1e-5 and model["max_batch"] == info["runtime"]["max_batch"]
    assert models["sentiment-binary"]["text_pair"] is True
    assert models["sentiment-binary"]["labels"] == ["Negative", "Positive"]
    general = models["sentiment-3class"]
    assert general["text_pair"] is True and general["labels"] == ["Negative", "Neutral", "Positive"]


# The default model reads tweets as tweets (`tweet-1`): emoji by their names, not [UNK].
TWEETS = [
    ("so sad 😭💔", "Negative"),
    ("😍🔥 best day ever", "Positive"),
    ("The meeting is scheduled for 3pm in room 204.", "Neutral"),
]


@pytest.mark.parametrize("text, label", TWEETS)
def test_the_default_model_reads_emoji(served: TestClient, text: str, label: str) -> None:
    response = served.post("/predict", json={"text": text})  # no "model": the default
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["model"] == "sentiment-3class" and got["label"] == label, got


@pytest.mark.parametrize("bundle", SHIPPED, ids=lambda p: p.name)
def test_answers_do_not_depend_on_batch_mates(served: TestClient, bundle: Path) -> None:
    """Each known tweet alone, then all of them (and a long one) in one request, which the
    service cuts into length-sorted batches: same labels, probabilities within 1e-5."""
    info = load_bundle(bundle)
    texts = [text for text, _, _ in KNOWN] + NEUTRAL + ["so " * 60 + "good"]
    items: list[dict[str, str] | str] = (
        [{"text": t, "entity": "Xbox"} for t in texts] if info.text_pair else list(texts)
    )
    alone = [predict(served, bundle.name, t, "Xbox" if info.text_pair else None) for t in texts]
    response = served.post("/predict", json={"texts": items, "model": bundle.name})
    assert response.status_code == 200, response.text
    together = response.json()["predictions"]
    for one, many in zip(alone, together, strict=True):
        assert one["label"] == many["label"]
        for label in info.labels:
            assert abs(one["scores"][label] - many["scores"][label]) <= 1e-5
