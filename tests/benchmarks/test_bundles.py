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
    assert all(rate > 0 for r in rows for rate in r["texts_per_s_by_turn"])


def test_engine_turns_alternate_the_order_and_take_the_ratio_of_medians(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Known rates per turn (the measurement stubbed): A B, B A, A B; medians 100 and 60."""
    other = build_bundle(tmp_path / "other")
    rates = {tiny_bundle: [90.0, 100.0, 120.0], other: [50.0, 60.0, 80.0]}
    calls: list[Path] = []

    def measured(bundle, texts, entities, settings, threads, seconds):  # type: ignore[no-untyped-def]
        calls.append(bundle.path)
        return {"texts_per_s": rates[bundle.path].pop(0)}

    monkeypatch.setattr("benchmarks.limit.service_plan", measured)
    rows = engine_turns([load_bundle(tiny_bundle), load_bundle(other)], ROWS, 3, 0.0)
    assert calls == [tiny_bundle, other, other, tiny_bundle, tiny_bundle, other]
    assert [r["texts_per_s_by_turn"] for r in rows] == [[90.0, 100.0, 120.0], [50.0, 60.0, 80.0]]
    assert [r["texts_per_s_median"] for r in rows] == [100.0, 60.0]
    assert [r["ratio_to_first"] for r in rows] == [1.0, 0.6]
