from __future__ import annotations

from pathlib import Path

from training.data import read_rows


def test_reader_survives_quotes_commas_emoji_newlines_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        '1,Nvidia,Positive,"a, quoted ""text"" with commas"\n'
        '2,Nvidia,Negative,"two\nlines 😡"\n'
        "3,Nvidia,Neutral,   \n"  # whitespace only
        "4,Nvidia,Sarcastic,what label is this\n"  # unknown label
        "x,Nvidia,Positive,bad id\n"
        "5,Nvidia,Positive\n"  # too few columns
        "6,Nvidia,Positive,fine,extra\n"  # too many columns
        "7,Nvidia,Irrelevant,ok\n",
        encoding="utf-8",
    )
    rows, report = read_rows(path)
    assert [r.tweet_id for r in rows] == [1, 2, 7]
    assert rows[0].text == 'a, quoted "text" with commas'
    assert rows[1].text == "two\nlines 😡"
    assert report.rows_read == 8 and report.rows_kept == 3
    assert report.dropped == {
        "empty_text": 1, "unknown_label": 1, "bad_tweet_id": 1, "wrong_column_count": 2,
    }  # fmt: skip
    assert report.unknown_labels == {"Sarcastic": 1}


def test_reader_does_not_crash_on_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b"1,E,Positive,caf\xe9 ok\n")
    rows, _ = read_rows(path)
    assert rows[0].text.startswith("caf")


def test_reads_the_shared_copy(twitter_data: Path) -> None:
    rows, report = read_rows(twitter_data / "twitter_training.csv")
    assert report.rows_read == 12447
    assert report.rows_kept + sum(report.dropped.values()) == report.rows_read
    assert {r.label for r in rows} == {"Positive", "Negative", "Neutral", "Irrelevant"}
