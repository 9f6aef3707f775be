from argparse import Namespace
from pathlib import Path

import pytest

from benchmarks.texts import BUILTIN_SAMPLE, Tweet, load_semeval, load_tweets, load_workloads


def test_reads_real_csv_layout(tiny_data: Path) -> None:
    tweets, source = load_tweets(tiny_data, limit=100)
    texts = [t.text for t in tweets]
    assert "I love this game, the update is great" in texts  # comma inside quotes
    assert 'this is awful "really"' in texts  # escaped quotes
    assert all(t.strip() for t in texts)  # the empty text is dropped
    assert len(texts) == len(set(texts)) == 4
    assert all(isinstance(t, Tweet) and t.entity.strip() for t in tweets)
    assert "twitter_validation.csv" in source


def test_limit_and_seed_are_deterministic(tiny_data: Path) -> None:
    assert load_tweets(tiny_data, limit=2, seed=1) == load_tweets(tiny_data, limit=2, seed=1)
    assert len(load_tweets(tiny_data, limit=2)[0]) == 2


def test_falls_back_to_builtin_sample(tmp_path: Path) -> None:
    tweets, source = load_tweets(tmp_path)
    assert tweets == list(BUILTIN_SAMPLE)
    assert "built-in" in source
    assert load_tweets(None)[0] == list(BUILTIN_SAMPLE)


SEMEVAL_ROWS = [
    "tweet_id,label,text",
    '1,positive,"Loving the new update, best patch in years &amp; more"',
    "2,negative,the servers are down again",
    "3,neutral,the servers are down again",  # the same text twice: sent once
    "4,neutral,",  # empty: dropped
    '5,negative,"the caf\\u00e9 said ""closed"", again"',
]


def semeval_root(tmp_path: Path) -> Path:
    """A data root with a tiny SemEval-2017 test file in the real layout (header, quoting,
    HTML entities and JSON escapes as the real file has them)."""
    folder = tmp_path / "root" / "semeval2017_task4a"
    folder.mkdir(parents=True)
    (folder / "twitter-2017test-A.csv").write_text("\n".join(SEMEVAL_ROWS) + "\n")
    return folder.parent


def test_semeval_test_tweets_are_read_as_training_reads_them(tmp_path: Path) -> None:
    texts, source = load_semeval(semeval_root(tmp_path), limit=100)
    assert sorted(texts) == sorted(
        [
            "Loving the new update, best patch in years & more",
            "the servers are down again",
            'the café said "closed", again',
        ]
    )
    assert "twitter-2017test-A.csv" in source and "text only" in source
    assert load_semeval(tmp_path / "root", limit=3, seed=1)[0] != texts  # the seed orders them
    assert len(load_semeval(tmp_path / "root", limit=2)[0]) == 2
    with pytest.raises(FileNotFoundError, match=r"twitter-2017test-A\.csv not found"):
        load_semeval(tmp_path / "nowhere")


def args(data: Path | None, root: Path | None = None, workload: str = "both") -> Namespace:
    return Namespace(data=data, data_root=root, workload=workload, texts=2000)


def test_both_workloads_each_with_its_texts(tiny_data: Path, tmp_path: Path) -> None:
    root = semeval_root(tmp_path)
    loads, notes = load_workloads(args(tiny_data, root), text_pair=True)
    assert [w.name for w in loads] == ["twitter-entity", "semeval"] and notes == []
    entity, semeval = loads
    assert entity.entities is not None and len(entity.entities) == len(entity.texts) == 4
    assert semeval.entities is None and len(semeval.texts) == 3  # text only, always
    assert load_workloads(args(tiny_data, root), text_pair=False)[0][0].entities is None
    only, _ = load_workloads(args(tiny_data, root, "semeval"), text_pair=True)
    assert [w.name for w in only] == ["semeval"]


def test_the_semeval_file_is_found_beside_the_data_folder(tmp_path: Path) -> None:
    root = semeval_root(tmp_path)
    (root / "twitter_entity").mkdir()
    loads, notes = load_workloads(args(root / "twitter_entity"), text_pair=False)
    assert [w.name for w in loads] == ["twitter-entity", "semeval"] and notes == []
    assert loads[0].texts == [t.text for t in BUILTIN_SAMPLE]  # no Twitter Entity files there


def test_a_missing_semeval_file_is_a_note_and_the_other_workload_goes_on(
    tiny_data: Path, tmp_path: Path
) -> None:
    loads, notes = load_workloads(args(tiny_data, tmp_path), text_pair=True)
    assert [w.name for w in loads] == ["twitter-entity"]
    assert len(notes) == 1 and notes[0].startswith("semeval workload skipped: ")
    assert "twitter-2017test-A.csv not found" in notes[0]
    loads, notes = load_workloads(args(None), text_pair=True)
    assert [w.name for w in loads] == ["twitter-entity"] and "no --data-root" in notes[0]
