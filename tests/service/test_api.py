"""service.api: load by name or folder, the HTTP API's answers, long lists, threads, bad input."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from service import Settings, create_app, load
from service.api import CHUNK_ROWS, InputError, InputTypeError, Prediction, UnknownModel
from service.bundle import BundleError
from tests.service.tiny_bundle import build_bundle

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["I love this game", "awful update, servers broken", "the movie is the best", "sad today"]


def http_answers(
    bundle: Path,
    texts: list[str],
    entities: list[str | None] | None = None,
    model: str | None = None,
) -> list[dict[str, Any]]:
    """What the HTTP API answers for each text sent alone (the prediction, without `model`)."""
    settings = Settings(bundle=bundle, threads=1, access_log=False, warmup=False)
    answers = []
    with TestClient(create_app(settings)) as client:
        for i, text in enumerate(texts):
            body: dict[str, Any] = {"text": text} | ({"model": model} if model else {})
            if entities and entities[i]:
                body["entity"] = entities[i]
            answer = client.post("/predict", json=body).json()
            answers.append({k: answer[k] for k in ("label", "score", "scores", "truncated")})
    return answers


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An entity-pair bundle whose answers depend on batch-mates: the API must run it one
    text per run, as the service does, and agree exactly."""
    return build_bundle(tmp_path_factory.mktemp("api") / "pair", text_pair=True, coupled=True)


def test_predict_equals_http_with_entities(pair: Path) -> None:
    entities: list[str | None] = ["game", None, "movie", ""]
    model = load(pair)
    got = [p.to_dict() for p in model.predict(TEXTS, entities)]
    assert got == http_answers(pair, TEXTS, entities)
    assert model.max_batch == 1  # coupled: the drift probe made it run texts alone
    assert all(isinstance(p, Prediction) for p in model.predict(TEXTS))


def test_a_model_by_name_and_a_view_by_name(tmp_path: Path) -> None:
    general = build_bundle(
        tmp_path / "models" / "general",
        labels=["Negative", "Neutral", "Positive"],
        model_name="tiny-3",
        views={"tiny-2": ["Negative", "Positive"]},
    )
    three = load("tiny-3", models=tmp_path / "models")
    two = load("tiny-2", models=tmp_path / "models")
    assert (three.name, two.name, two.view_of) == ("tiny-3", "tiny-2", "tiny-3")
    assert two.labels == ("Negative", "Positive")
    assert [p.to_dict() for p in two.predict(TEXTS)] == http_answers(general, TEXTS, model="tiny-2")  # fmt: skip
    with pytest.raises(UnknownModel, match=r"'tiny-9'.*\(tiny-3, tiny-2\)"):
        load("tiny-9", models=tmp_path / "models")


def test_long_lists_are_batched_in_order_on_several_threads(tiny_bundle: Path) -> None:
    texts = [f"{TEXTS[i % 4]} {'!' * (i % 9)}" for i in range(2 * CHUNK_ROWS + 37)]
    with load(tiny_bundle, workers=2) as model:
        together = model.predict(texts)
    alone = load(tiny_bundle, workers=1)
    one_by_one = [alone.predict([text])[0] for text in texts]
    assert [p.label for p in together] == [p.label for p in one_by_one]
    for a, b in zip(together, one_by_one, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-5)


def test_one_model_shared_by_threads(tiny_bundle: Path) -> None:
    model = load(tiny_bundle, workers=2)
    expected = model.predict(TEXTS * 10)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: model.predict(TEXTS * 10), range(8)))
    assert all(result == expected for result in results)
    model.close()


@pytest.mark.parametrize(
    ("texts", "entities", "error", "message"),
    [
        (["ok", ""], None, InputError, "texts[1]: empty text"),
        (["ok", " \n\t"], None, InputError, "texts[1]: empty text"),
        (["ok", 3], None, InputTypeError, "texts[1]: text is not a string (int)"),
        (["ok", None], None, InputTypeError, "texts[1]: no text"),
        ("one text", None, InputTypeError, "texts must be a list of strings, not str"),
        (["lone \udc80 surrogate"], None, InputError, "texts[0]: undecodable bytes"),
        (["ok"], ["x" * 101], InputError, "entities[0]: entity longer than 100 characters"),
        (["ok"], [7], InputTypeError, "entities[0]: entity is not a string (int)"),
        (["ok", "ok"], ["a"], InputError, "1 entities for 2 texts"),
        (["good"], [" ".join("abcdefghijklmno")], InputError, "texts[0]: an entity leaves"),
    ],
)
def test_bad_input_raises_naming_the_problem(
    pair: Path, texts: Any, entities: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        load(pair).predict(texts, entities)
    assert str(raised.value).startswith(message), str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, TypeError) == (error is InputTypeError)


def test_an_entity_for_a_model_that_reads_none(tiny_bundle: Path) -> None:
    with pytest.raises(InputError, match="model 'tiny-test' takes no entity"):
        load(tiny_bundle).predict(["ok"], ["game"])


def test_unknown_models_and_broken_bundles_are_named(tmp_path: Path, tiny_bundle: Path) -> None:
    with pytest.raises(UnknownModel, match=r"model 'nope': not a bundle folder, nor a model under"):  # fmt: skip
        load("nope", models=tmp_path)
    broken = build_bundle(tmp_path / "broken")
    (broken / "model.onnx").write_bytes(b"altered")
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 does not match"):
        load(broken)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        load(tiny_bundle, threads=0)


@pytest.mark.slow
def test_the_shipped_models_answer_as_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """By name under models/, with its entity where the bundle reads one (binary) and
    without (3-class): the same numbers as the service."""
    monkeypatch.chdir(REPO)
    texts = ["the new patch is awesome, servers finally stable", "so sad 😭💔", "meh."]
    for name, entities in (("sentiment-binary", ["Overwatch", None, "Xbox"]), ("sentiment-3class", None)):  # fmt: skip
        got = [p.to_dict() for p in load(name).predict(texts, entities)]
        assert got == http_answers(REPO / "models" / name, texts, entities)
