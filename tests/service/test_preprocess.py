"""service/preprocess.py: each tweet-1 rule, idempotence, strange input, and train/serve parity
(the service and the scorer must tokenise the normalised text of a bundle that declares it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from tokenizers import Tokenizer

from service import Settings, create_app
from service.bundle import BundleError, load_bundle
from service.engine import Engine
from service.preprocess import TWEET_1, normalise_tweet, preprocessor
from service.score import ScoreConfig, score
from tests.service.tiny_bundle import build_bundle

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("fish &amp; chips &lt;3", "fish & chips <3"),
        ("twice escaped &amp;amp; &amp;lt;3", "twice escaped & <3"),
        ("see https://t.co/AbC123 and www.example.com/x now", "see http and http now"),
        ("HTTP://EXAMPLE.COM/Path?q=1", "http"),
        ("@Apple @some_user hi", "@user @user hi"),
        ("mail me@example.com", "mail me@example.com"),  # an address is not a mention
        ("so sad 😭💔", "so sad loudly crying face broken heart"),
        ("😍🔥 best day ever", "smiling face with heart-eyes fire best day ever"),
        ("  lots \t of\n\nspace  ", "lots of space"),
        ("zero\u200bwidth\u200d join\ufe0f", "zerowidth join"),
        ("bell\x07 and nul\x00", "bell and nul"),
        ("lone \ud800 surrogate", "lone surrogate"),
        ("plain text stays", "plain text stays"),
        ("#1 fan, 100%", "#1 fan, 100%"),
    ],
)
def test_each_rule(raw: str, normalised: str) -> None:
    assert normalise_tweet(raw) == normalised


def test_a_family_emoji_is_one_name_not_three_and_joiners() -> None:
    assert normalise_tweet("👨\u200d👩\u200d👧") == "family man woman girl"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_idempotent(text: str) -> None:
    once = normalise_tweet(text)
    assert normalise_tweet(once) == once


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(["@bob", "http://t.co/x", "😭", "&amp;", "ok", " ", "\u200d", "www.a.b"]),
        max_size=12,
    )
)
def test_idempotent_on_tweet_pieces(pieces: list[str]) -> None:
    once = normalise_tweet(" ".join(pieces))
    assert normalise_tweet(once) == once
    assert "😭" not in once and "t.co" not in once and "@bob" not in once


def test_long_input_is_linear_not_a_hang() -> None:
    assert normalise_tweet("😭" * 20_000).count("loudly crying face") == 20_000
    assert normalise_tweet("a" * 100_000) == "a" * 100_000


def test_names_resolve_and_unknown_names_are_refused() -> None:
    assert preprocessor(None) is None
    assert preprocessor(TWEET_1) is normalise_tweet
    with pytest.raises(ValueError, match="unknown preprocess 'tweet-9'"):
        preprocessor("tweet-9")


# ------------------------------------------------------------------------------- the bundle


@pytest.fixture(scope="module")
def tweet_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = ["@", "user", "http", "sad", "so", "loudly", "crying", "face", "bob", ":", "/", "."]
    return build_bundle(
        tmp_path_factory.mktemp("bundle") / "tweet", words=words, preprocess=TWEET_1
    )


RAW = "so sad @bob http://t.co/x 😭"
NORMALISED = "so sad @user http loudly crying face"  # RAW by the tweet-1 rules (test_each_rule)


def direct_probs(bundle: Path, text: str) -> np.ndarray:
    """The bundle's model run on `text` exactly as given: no normalisation in between."""
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    ids = np.array([tokenizer.encode(text).ids], np.int64)
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    e = np.exp(logits - logits.max())
    return (e / e.sum())[0]


def test_the_engine_tokenises_the_normalised_text(tweet_bundle: Path) -> None:
    engine = Engine(load_bundle(tweet_bundle), threads=1)
    tokenizer = Tokenizer.from_file(str(tweet_bundle / "tokenizer.json"))
    ids = engine.encode([RAW])[0].ids
    assert ids == tokenizer.encode(NORMALISED).ids
    assert ids != tokenizer.encode(RAW).ids


def test_the_service_answers_on_the_normalised_text(
    tweet_bundle: Path, make_settings: Callable[..., Settings]
) -> None:
    expected, raw = (
        direct_probs(tweet_bundle, NORMALISED),
        direct_probs(tweet_bundle, RAW),
    )
    assert np.abs(expected - raw).max() > 1e-3  # else this test could not tell them apart
    with TestClient(create_app(make_settings(bundle=tweet_bundle))) as client:
        scores = client.post("/predict", json={"text": RAW}).json()["scores"]
        info = client.get("/info").json()
    assert np.allclose([scores["Negative"], scores["Positive"]], expected, atol=1e-5)
    assert info["models"][0]["preprocess"] == TWEET_1


def test_the_scorer_answers_on_the_normalised_text(tweet_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": RAW}) + "\n")
    out = tmp_path / "out.jsonl"
    score(ScoreConfig(input=source, output=out, model=str(tweet_bundle), pool_size=1))
    row: dict[str, Any] = json.loads(out.read_text())
    expected = direct_probs(tweet_bundle, NORMALISED)
    got = [row["scores"]["Negative"], row["scores"]["Positive"]]
    assert np.allclose(got, expected, atol=1e-5)


def test_a_bundle_without_the_field_reads_text_as_given(tiny_bundle: Path) -> None:
    engine = Engine(load_bundle(tiny_bundle), threads=1)
    tokenizer = Tokenizer.from_file(str(tiny_bundle / "tokenizer.json"))
    assert engine.normalise is None
    short = "@bob &amp; 😭"  # within the tiny model's 16 tokens
    assert engine.encode([short])[0].ids == tokenizer.encode(short).ids


def test_a_bundle_naming_an_unknown_preprocess_is_refused(tmp_path: Path) -> None:
    folder = build_bundle(tmp_path / "future", preprocess="tweet-9")
    with pytest.raises(BundleError, match="'preprocess': unknown preprocess 'tweet-9'"):
        load_bundle(folder)


STRANGE = [
    "😭😭😭",
    "\u200d\u200d\ufe0f",
    "\ud83d lone high surrogate",
    "x" * 60_000,
    "ctrl \x00\x01\x1f\x7f chars",
    "&amp;" * 2_000,
    "@a " * 3_000,
]


@pytest.mark.parametrize("text", STRANGE, ids=range(len(STRANGE)))
def test_strange_input_gets_an_answer_or_a_4xx_never_a_500(
    tweet_bundle: Path, make_settings: Callable[..., Settings], text: str
) -> None:
    body = json.dumps({"text": text}).encode()  # json.dumps escapes lone surrogates as \\ud83d
    with TestClient(create_app(make_settings(bundle=tweet_bundle))) as client:
        response = client.post(
            "/predict", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code in (200, 413, 422), response.text
    if response.status_code == 200:
        assert response.json()["label"] in ("Negative", "Positive")
    else:
        assert set(response.json()["error"]) == {"type", "message"}
