"""Reading the Twitter Entity Sentiment CSVs.

The files have no header (tweet_id, entity, label, text). Kaggle's original training file holds
about six paraphrased rows per tweet_id; the copy in shared/ holds one. Both read the same way:
rows are kept, and grouping by tweet_id is the protocol's job. Bad rows are counted, never fatal.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

TRAIN_FILE = "twitter_training.csv"
VALIDATION_FILE = "twitter_validation.csv"
KNOWN_LABELS = ("Positive", "Negative", "Neutral", "Irrelevant")


@dataclass(frozen=True)
class Row:
    tweet_id: int | str  # the split key: an id, or the normalised text where a source has none
    entity: str
    label: str
    text: str
    source: str = "twitter_entity"


@dataclass
class LoadReport:
    """What a read kept and dropped, and why: printed by training, stored in metrics.json."""

    path: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    unknown_labels: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "dropped": dict(self.dropped),
            "unknown_labels": dict(self.unknown_labels),
        }


def read_rows(path: str | Path) -> tuple[list[Row], LoadReport]:
    """Parse one CSV file; rows with empty text, a bad id, a wrong column count or an unknown
    label are dropped and counted in the report."""
    path = Path(path)
    report = LoadReport(path=str(path))
    rows: list[Row] = []
    # newline="" lets the csv module handle quoted line breaks; "replace" keeps a bad byte
    # from killing a 70k-row read.
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        for record in csv.reader(handle):
            report.rows_read += 1
            if len(record) != 4:
                report.dropped["wrong_column_count"] += 1
                continue
            raw_id, entity, label, text = record
            try:
                tweet_id = int(raw_id.strip())
            except ValueError:
                report.dropped["bad_tweet_id"] += 1
                continue
            label = label.strip()
            if label not in KNOWN_LABELS:
                report.unknown_labels[label] += 1
                report.dropped["unknown_label"] += 1
                continue
            text = text.strip()
            if not text:
                report.dropped["empty_text"] += 1
                continue
            rows.append(Row(tweet_id, entity.strip(), label, text))
    report.rows_kept = len(rows)
    return rows, report
