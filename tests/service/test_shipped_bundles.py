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
    # sentiment-3class is not shipped: its int8 graphs failed the export gate (reports/3class)
    assert [p.name for p in SHIPPED] == ["sentiment-binary"]


@pytest.fixture(scope="module")
def served() -> Iterator[TestClient]:
    default = REPO / "models" / "sentiment-binary"
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
    assert info["default_model"] == "sentiment-binary"
    models = {m["name"]: m for m in info["models"]}
    assert set(models) == {p.name for p in SHIPPED}
    for path in SHIPPED:
        bundle = load_bundle(path)
        model = models[path.name]
        assert model["text_pair"] is bundle.text_pair and model["labels"] == list(bundle.labels)
        # dynamic int8: answers depend on batch-mates, so the service runs texts alone
        assert model["batch_drift"] > 1e-4 and model["max_batch"] == 1
    assert models["sentiment-binary"]["text_pair"] is True
    assert models["sentiment-binary"]["labels"] == ["Negative", "Positive"]
