"""benchmarks/bundles.py: tokens raw vs normalised, and engines measured in turns."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bundles import engine_turns, token_counts
from service.bundle import load_bundle
from tests.service.tiny_bundle import build_bundle
from training.data import Row

ROWS = [
    Row(1, "", "Negative", "so sad @somebody_long http://t.co/AbCdEf123 &amp; more"),
    Row(2, "", "Positive", "great game 😍"),
]


def test_token_counts_see_what_normalisation_saves(tiny_bundle: Path) -> None:
    counts = token_counts(tiny_bundle / "tokenizer.json", ROWS, "tweet-1")
    assert counts["tweets"] == 2
    assert counts["tweet-1"]["tokens_per_tweet"] < counts["raw"]["tokens_per_tweet"]
    assert 0 <= counts["tweet-1"]["with_unk"] <= counts["raw"]["with_unk"] <= 1


@pytest.mark.timeout(120)
def test_engine_turns_report_every_bundle_against_the_first(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    slow = build_bundle(tmp_path / "slow", slow=2)
    rows = engine_turns([load_bundle(tiny_bundle), load_bundle(slow)], ROWS, 2, 0.2)
    assert [len(r["texts_per_s_by_turn"]) for r in rows] == [2, 2]
    assert rows[0]["ratio_to_first"] == 1.0 and rows[1]["ratio_to_first"] > 0
