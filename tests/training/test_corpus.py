"""The multi-source protocol: official tests kept, seeded splits elsewhere, no test text trained on."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import TWITTER_DATA, write_csv
from tests.training.source_fixtures import write_source_root
from training.corpus import build_corpus
from training.data import Row
from training.protocol import split_groups
from training.reader import normalise
from training.sources import DEFAULT_SOURCES, SOURCES, SpecError, resolve

CLASSES = ("Negative", "Neutral", "Positive")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_source_root(tmp_path_factory.mktemp("sources"))
    entity = root / "twitter_entity"
    entity.mkdir()
    train = [
        (100 + i, "Xbox", ("Negative", "Neutral", "Positive")[i % 3], f"entity tweet {i}")
        for i in range(40)
    ]
    # the validation ids leak into the training file, as in the real data; one more copies a
    # SemEval test text under a new id
    val = train[:6]
    train.append((999, "Xbox", "Neutral", "copy of a TEST tweet about the launch"))
    write_csv(entity / "twitter_training.csv", train)
    write_csv(entity / "twitter_validation.csv", val)
    return root


def texts(rows: list[Row]) -> set[str]:
    return {normalise(r.text) for r in rows}


def test_default_sources_split_and_decontaminate(root: Path) -> None:
    corpus = build_corpus(root, list(DEFAULT_SOURCES), CLASSES, test_fraction=0.2)
    assert set(corpus.tests) == set(DEFAULT_SOURCES)
    # the official test file is SemEval's test, whole (30 rows + the shared one)
    assert len(corpus.tests["semeval2017"]) == 31
    assert all("test" in r.text or "launch" in r.text for r in corpus.tests["semeval2017"])
    every_test = set().union(*(texts(rows) for rows in corpus.tests.values()))
    assert not texts(corpus.train) & every_test
    assert not texts(corpus.dev) & every_test
    # the shared text was removed from sanders' and twitter_entity's training pools, and counted
    assert corpus.removed_as_test_copies == {"sanders": 1, "twitter_entity": 1}
    # sources without a test file get their own, disjoint by key from train and dev
    for name in ("sanders", "apple", "sxsw", "self_driving", "coachella"):
        keys = lambda rows, n=name: {r.tweet_id for r in rows if r.source == n}  # noqa: E731
        assert corpus.tests[name] and not keys(corpus.tests[name]) & (
            keys(corpus.train) | keys(corpus.dev)
        )
    assert {r.label for r in corpus.train} == set(CLASSES)
    summary = corpus.summary()
    assert summary["per_source"]["sanders"]["removed_as_test_copies"] == 1
    assert any("irrelevant" in k for r in summary["load_reports"] for k in r["dropped"])
    assert "twitter_entity/twitter_training.csv" in summary["data_sha256"]


def test_binary_label_set_drops_neutral_everywhere(root: Path) -> None:
    corpus = build_corpus(root, ["semeval2017", "apple"], ("Negative", "Positive"))
    for rows in [corpus.train, corpus.dev, *corpus.tests.values()]:
        assert {r.label for r in rows} <= {"Negative", "Positive"}


def test_dev_is_capped_per_source(root: Path) -> None:
    corpus = build_corpus(root, ["semeval2017"], CLASSES, max_dev=20)
    assert 15 <= sum(r.source == "semeval2017" for r in corpus.dev) <= 22


def test_split_is_seeded_stratified_and_keeps_copies_together() -> None:
    rows = [Row(f"k{i % 50}", "", ("Negative", "Positive")[i % 2 if i < 50 else (i - 50) % 2], f"t{i % 50}", "s")
            for i in range(100)]  # fmt: skip
    a = split_groups(rows, (0.2, 0.2), seed=3)
    assert a == split_groups(rows, (0.2, 0.2), seed=3)
    assert a != split_groups(rows, (0.2, 0.2), seed=4)
    train, dev, test = ({r.tweet_id for r in part} for part in a)
    assert not train & dev and not train & test and not dev & test
    assert Counter(r.label for r in a[1]) == {"Negative": 10, "Positive": 10}


def test_noncommercial_sets_need_an_opt_in() -> None:
    with pytest.raises(SpecError, match="non-commercial"):
        resolve(["semeval2017", "us_airline"])
    assert resolve(["us_airline", "gop_debate"], allow_noncommercial=True)
    with pytest.raises(SpecError, match="unknown source"):
        resolve(["imdb"])
    assert all(SOURCES[n].commercial for n in DEFAULT_SOURCES if n in SOURCES)


def test_noncommercial_sources_read_when_opted_in(root: Path) -> None:
    corpus = build_corpus(root, resolve(["us_airline", "gop_debate"], True), CLASSES)
    assert set(corpus.tests) == {"us_airline", "gop_debate"}
    assert corpus.train


@pytest.mark.skipif(
    not (TWITTER_DATA / "twitter_validation.csv").is_file(), reason="shared data absent"
)
def test_real_sources_protocol() -> None:  # pragma: no cover - needs ../shared
    corpus = build_corpus(TWITTER_DATA.parent, list(DEFAULT_SOURCES), CLASSES)
    assert Counter(r.label for r in corpus.tests["semeval2017"]) == {
        "Negative": 3972, "Neutral": 5937, "Positive": 2375}  # fmt: skip
    every_test = set().union(*(texts(rows) for rows in corpus.tests.values()))
    assert not texts(corpus.train) & every_test and not texts(corpus.dev) & every_test


HELD = "twitter-2016test-A.csv"


@pytest.fixture
def held_root(tmp_path: Path) -> Path:
    """The fixture sources, plus one 2013 training row that re-uses a 2016-test tweet id."""
    root = write_source_root(tmp_path)
    [path] = SOURCES["semeval2017"].paths(root, (HELD,))
    held_id = path.read_text().splitlines()[1].split(",")[0]
    [other] = SOURCES["semeval2017"].paths(root, ("twitter-2013train-A.csv",))
    other.write_text(other.read_text() + f"{held_id},positive,the same tweet once more\n")
    return root


def test_dev_files_are_held_out_whole(held_root: Path) -> None:
    plain = build_corpus(held_root, ["semeval2017", "apple"], CLASSES)
    corpus = build_corpus(
        held_root, ["semeval2017", "apple"], CLASSES, dev_files={"semeval2017": (HELD,)}
    )
    [path] = SOURCES["semeval2017"].paths(held_root, (HELD,))
    held_ids = {line.split(",")[0] for line in path.read_text().splitlines()[1:]}
    dev = [r for r in corpus.dev if r.source == "semeval2017"]
    train_ids = {r.tweet_id for r in corpus.train if r.source == "semeval2017"}
    assert {r.tweet_id for r in dev} == held_ids  # the whole file, nothing else
    assert not train_ids & held_ids  # neither its rows nor a row sharing an id is trained on
    rule = corpus.summary()["per_source"]["semeval2017"]["split"]
    assert HELD in rule and f"all {len(held_ids)} keys" in rule and "1 training rows" in rule
    # the other source is split as without the option
    assert [r for r in corpus.dev if r.source == "apple"] == [
        r for r in plain.dev if r.source == "apple"
    ]


def test_dev_files_are_sampled_down_to_max_dev(held_root: Path) -> None:
    corpus = build_corpus(held_root, ["semeval2017"], CLASSES, dev_files={"semeval2017": (HELD,)}, max_dev=10)  # fmt: skip
    [path] = SOURCES["semeval2017"].paths(held_root, (HELD,))
    held_ids = {line.split(",")[0] for line in path.read_text().splitlines()[1:]}
    n = len(corpus.dev)  # stratified: each label's share rounded, so about max_dev
    assert 8 <= n <= 10 and {r.tweet_id for r in corpus.dev} <= held_ids
    assert not {r.tweet_id for r in corpus.train} & held_ids  # the unsampled rest is not trained on
    assert f"{n} of 30 keys, sampled" in corpus.summary()["per_source"]["semeval2017"]["split"]


@pytest.mark.parametrize(
    ("dev_files", "message"),
    [
        ({"semeval2017": ("twitter-2017test-A.csv",)}, "semeval2017 has no training file twitter-2017test-A.csv"),
        ({"apple": (HELD,)}, "no source named apple"),
        ({"twitter_entity": ("twitter_validation.csv",)}, "twitter_entity keeps its clean protocol"),
    ],
)  # fmt: skip
def test_bad_dev_files_are_refused(
    root: Path, dev_files: dict[str, tuple[str, ...]], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        build_corpus(root, ["semeval2017", "twitter_entity"], CLASSES, dev_files=dev_files)
