from pathlib import Path

from benchmarks.texts import BUILTIN_SAMPLE, Tweet, load_tweets


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
