"""A data root in the layout of shared/data, every source in its real file format, tiny.

Headers and label spellings are the real files' (see each set's README); the texts are made up
and learnable. A few training rows copy a test text of another source, so decontamination has
something to remove.
"""

from __future__ import annotations

import csv
from pathlib import Path

from training.sources import SOURCES

WORDS = {
    "Negative": ["awful broken mess", "worst service ever", "hate this update"],
    "Neutral": ["the event starts at noon", "new version released today", "report on the market"],
    "Positive": ["love this so much", "great work team", "best day ever"],
}
# A 2017-test text that also sits in sanders' training file (with other case and spacing).
SHARED_TEST_TEXT = "Copy of a test tweet about the launch"

# Per source: the raw label for each class, and a function building one record.
RAW = {
    "semeval2017": {"Negative": "negative", "Neutral": "neutral", "Positive": "positive"},
    "sanders": {"Negative": "negative", "Neutral": "neutral", "Positive": "positive"},
    "apple": {"Negative": "1", "Neutral": "3", "Positive": "5"},
    "sxsw": {
        "Negative": "Negative emotion",
        "Neutral": "No emotion toward brand or product",
        "Positive": "Positive emotion",
    },
    "self_driving": {"Negative": "2", "Neutral": "3", "Positive": "4"},
    "coachella": {"Negative": "negative", "Neutral": "neutral", "Positive": "positive"},
    "us_airline": {"Negative": "negative", "Neutral": "neutral", "Positive": "positive"},
    "gop_debate": {"Negative": "Negative", "Neutral": "Neutral", "Positive": "Positive"},
}
HEADERS = {
    "semeval2017": ["tweet_id", "label", "text"],
    "sanders": ["Topic", "Sentiment", "TweetId", "TweetDate", "TweetText"],
    "apple": ["_unit_id", "_golden", "_unit_state", "_trusted_judgments", "_last_judgment_at",
              "sentiment", "sentiment:confidence", "date", "id", "query", "sentiment_gold", "text"],
    "sxsw": ["tweet_text", "emotion_in_tweet_is_directed_at",
             "is_there_an_emotion_directed_at_a_brand_or_product"],
    "self_driving": ["_unit_id", "_golden", "_unit_state", "_trusted_judgments",
                     "_last_judgment_at", "sentiment", "sentiment:confidence", "our_id",
                     "sentiment_gold", "sentiment_gold_reason", "text"],
    "coachella": ["coachella_sentiment", "coachella_yn", "name", "retweet_count", "text",
                  "tweet_coord", "tweet_created", "tweet_id", "tweet_location", "user_timezone"],
    "us_airline": ["tweet_id", "airline_sentiment", "airline_sentiment_confidence",
                   "negativereason", "negativereason_confidence", "airline",
                   "airline_sentiment_gold", "name", "negativereason_gold", "retweet_count",
                   "text", "tweet_coord", "tweet_created", "tweet_location", "user_timezone"],
    "gop_debate": ["id", "candidate", "candidate_confidence", "relevant_yn",
                   "relevant_yn_confidence", "sentiment", "sentiment_confidence",
                   "subject_matter", "subject_matter_confidence", "candidate_gold", "name",
                   "relevant_yn_gold", "retweet_count", "sentiment_gold", "subject_matter_gold",
                   "text", "tweet_coord", "tweet_created", "tweet_id", "tweet_location",
                   "user_timezone"],
}  # fmt: skip


def _record(source: str, header: list[str], uid: int, label: str, text: str) -> list[str]:
    spec = SOURCES[source]
    values = dict.fromkeys(header, "")
    values[spec.text_col] = text
    values[spec.label_col] = label
    if spec.id_col:
        values[spec.id_col] = str(uid)
    if spec.entity_col:
        values[spec.entity_col] = "apple"
    return [values[h] for h in header]


def _rows(source: str, n: int, start: int, salt: str) -> list[tuple[int, str, str]]:
    out = []
    for i in range(n):
        cls = ("Negative", "Neutral", "Positive")[i % 3]
        text = f"{WORDS[cls][i % 3]} {salt} {start + i}"
        out.append((start + i, RAW[source][cls], text))
    return out


def write_file(path: Path, source: str, rows: list[tuple[int, str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = HEADERS[source]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(_record(source, header, uid, label, text) for uid, label, text in rows)


def write_source_root(root: Path, per_file: int = 30) -> Path:
    """Every spec'd source under `root`; returns `root`. twitter_entity is written by the caller."""
    for name, spec in SOURCES.items():
        start = 10_000 * (list(SOURCES).index(name) + 1)
        for k, filename in enumerate(spec.train_files):
            rows = _rows(name, per_file, start + 100 * k, name)
            if name == "sanders" and k == 0:
                rows.append((start + 99, "neutral", "  copy OF a test tweet   about the launch "))
                rows.append((start + 98, "irrelevant", "hola que tal"))
            write_file(spec.paths(root, (filename,))[0], name, rows)
        for k, filename in enumerate(spec.test_files):
            rows = _rows(name, per_file, start + 5000 + 100 * k, f"{name} test")
            rows.append((start + 5999, "neutral", SHARED_TEST_TEXT))
            write_file(spec.paths(root, (filename,))[0], name, rows)
    return root
