from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import write_csv
from training.protocol import build_splits


def ids(rows: list) -> set[int]:
    return {r.tweet_id for r in rows}


def test_clean_split_shares_no_tweet_id_on_the_real_data(twitter_data: Path) -> None:
    splits = build_splits(twitter_data, ["Negative", "Positive"])
    assert not ids(splits.train) & ids(splits.dev)
    assert not ids(splits.train) & ids(splits.test)
    assert not ids(splits.dev) & ids(splits.test)
    # the data README's numbers: 277 Positive + 266 Negative validation rows
    assert Counter(r.label for r in splits.test) == {"Positive": 277, "Negative": 266}
    assert {r.label for r in splits.train + splits.dev} == {"Negative", "Positive"}
    # stratified: dev keeps the training label balance within a point
    share = lambda rows: sum(r.label == "Positive" for r in rows) / len(rows)  # noqa: E731
    assert abs(share(splits.dev) - share(splits.train)) < 0.02
    assert len(splits.dev) == pytest.approx(0.1 * (len(splits.train) + len(splits.dev)), abs=2)


def test_leaky_split_keeps_the_validation_ids_in_training(twitter_data: Path) -> None:
    leaky = build_splits(twitter_data, ["Negative", "Positive"], leaky=True)
    overlap = ids(leaky.train + leaky.dev) & ids(leaky.test)
    # every test id is in the training file; the few missing had empty text there (dropped)
    assert len(overlap) >= 0.98 * len(ids(leaky.test))


def test_split_is_seeded(twitter_data: Path) -> None:
    a = build_splits(twitter_data, ["Negative", "Positive"], seed=1)
    b = build_splits(twitter_data, ["Negative", "Positive"], seed=1)
    c = build_splits(twitter_data, ["Negative", "Positive"], seed=2)
    assert ids(a.dev) == ids(b.dev) != ids(c.dev)


def test_four_classes(twitter_data: Path) -> None:
    labels = ["Positive", "Negative", "Neutral", "Irrelevant"]
    splits = build_splits(twitter_data, labels)
    assert len(splits.test) == 1000
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
