from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ENTITY_VALIDATION, write_csv
from training.protocol import build_splits


def ids(rows: list) -> set[int]:
    return {r.tweet_id for r in rows}


# Each data folder with what its own construction says: the real set's numbers come from its
# README (skipped when ../shared is absent), the fixture's from tests/conftest.py, so the split
# logic runs on every clone.
DATA = {
    "entity_data": {
        "test": {k: ENTITY_VALIDATION[k] for k in ("Positive", "Negative")},
        "four_class_test": sum(ENTITY_VALIDATION.values()),
    },
    "twitter_data": {"test": {"Positive": 277, "Negative": 266}, "four_class_test": 1000},
}
on_both = pytest.mark.parametrize("data", list(DATA))


@on_both
def test_clean_split_shares_no_tweet_id(data: str, request: pytest.FixtureRequest) -> None:
    splits = build_splits(request.getfixturevalue(data), ["Negative", "Positive"])
    assert not ids(splits.train) & ids(splits.dev)
    assert not ids(splits.train) & ids(splits.test)
    assert not ids(splits.dev) & ids(splits.test)
    assert Counter(r.label for r in splits.test) == DATA[data]["test"]
    assert {r.label for r in splits.train + splits.dev} == {"Negative", "Positive"}
    # stratified: dev keeps the training label balance within two points
    share = lambda rows: sum(r.label == "Positive" for r in rows) / len(rows)  # noqa: E731
    assert abs(share(splits.dev) - share(splits.train)) < 0.02
    assert len(ids(splits.dev)) == pytest.approx(0.1 * len(ids(splits.train + splits.dev)), abs=2)


@on_both
def test_leaky_split_keeps_the_validation_ids_in_training(
    data: str, request: pytest.FixtureRequest
) -> None:
    leaky = build_splits(request.getfixturevalue(data), ["Negative", "Positive"], leaky=True)
    overlap = ids(leaky.train + leaky.dev) & ids(leaky.test)
    # every test id is in the training file; the few missing had empty text there (dropped)
    assert len(overlap) >= 0.98 * len(ids(leaky.test))


@on_both
def test_split_is_seeded(data: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(data)
    a = build_splits(folder, ["Negative", "Positive"], seed=1)
    b = build_splits(folder, ["Negative", "Positive"], seed=1)
    c = build_splits(folder, ["Negative", "Positive"], seed=2)
    assert ids(a.dev) == ids(b.dev) != ids(c.dev)


@on_both
def test_four_classes(data: str, request: pytest.FixtureRequest) -> None:
    labels = ["Positive", "Negative", "Neutral", "Irrelevant"]
    splits = build_splits(request.getfixturevalue(data), labels)
    assert len(splits.test) == DATA[data]["four_class_test"]
    assert {r.label for r in splits.train} == set(labels)


def test_kaggle_form_keeps_every_paraphrase_of_a_tweet_in_one_split(tmp_path: Path) -> None:
    """Kaggle's original file repeats each tweet_id ~6 times as paraphrases."""
    train = [
        (i, "E", "Positive" if i % 2 else "Negative", f"tweet {i} variant {v}")
        for i in range(200)
        for v in range(6)
    ]
    train += [(3, "E", "Positive", "tweet 3 variant 0")]  # an exact repeat is dropped
    write_csv(tmp_path / "twitter_training.csv", train)
    write_csv(
        tmp_path / "twitter_validation.csv",
        [(i, "E", "Positive", f"tweet {i}") for i in range(0, 200, 10)],
    )
    splits = build_splits(tmp_path, ["Negative", "Positive"], dev_fraction=0.2)
    assert not ids(splits.train) & ids(splits.dev)
    assert not (ids(splits.train) | ids(splits.dev)) & ids(splits.test)
    per_id = Counter(r.tweet_id for r in splits.train + splits.dev)
    assert set(per_id.values()) == {6}


def test_unknown_label_in_the_label_set_is_refused(tiny_data: Path) -> None:
    with pytest.raises(ValueError, match="Sarcastic"):
        build_splits(tiny_data, ["Positive", "Sarcastic"])
