"""Real tweet texts for every benchmark, so all servers and the engine see the same inputs.

The data set is optional: without it the harness still runs on a small built-in sample, and
says so in its results.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import NamedTuple


class Tweet(NamedTuple):
    text: str
    entity: str  # what the sentiment is about; sent only to entity-pair models


DATA_FILES = ("twitter_validation.csv", "twitter_training.csv")

# Used only when the data set is absent (fresh clone, CI); written for this project.
BUILTIN_SAMPLE: tuple[Tweet, ...] = tuple(
    Tweet(text, entity)
    for entity, text in (
        ("the app", "I love the new update, everything feels so much faster now!"),
        ("the bank", "Worst customer service ever. Three hours on hold and nobody picked up."),
        ("the game", "The patch notes are out, servers go down for maintenance at 9am."),
        ("the game", "Honestly this game keeps getting better with every season 🔥"),
        ("the shop", "My order arrived broken and the refund form does not even load. Great."),
        ("the console", "Can't wait for the launch event tonight, who else is watching?"),
        ("the phone", "Battery drains in two hours after the latest firmware, please fix this"),
        ("the game", "Just finished the campaign. What a ride, the ending got me."),
        ("the app", "@support why does the app log me out every single time I open it?"),
        ("the app", "Not sure how I feel about the redesign, some parts are nice, others not."),
        ("the team", "Shoutout to the team for fixing the bug so quickly, much appreciated"),
        ("the console", "This is the third console that died on me. Never buying again."),
        ("the movie", "new trailer dropped and it looks incredible"),
        (
            "the service",
            "Prices went up again and the service got worse. Cancelling my subscription.",
        ),
        ("the shop", "Thanks for the quick delivery, the headphones sound amazing"),
        ("the game", "lag lag lag. unplayable tonight"),
    )
)


def load_tweets(
    data_dir: Path | None, limit: int = 2000, seed: int = 13
) -> tuple[list[Tweet], str]:
    """Up to `limit` tweets with distinct, non-empty texts (and their entities), shuffled with
    `seed`, and where they came from.

    Reads the data set's CSV files (no header: tweet_id, entity, label, text) with a real CSV
    parser; falls back to `BUILTIN_SAMPLE` when none of the files exists.
    """
    entity_of: dict[str, str] = {}
    used: list[str] = []
    if data_dir is not None:
        for name in DATA_FILES:
            path = Path(data_dir) / name
            if not path.is_file():
                continue
            used.append(name)
            with open(path, newline="", encoding="utf-8") as handle:
                for row in csv.reader(handle):
                    if len(row) >= 4 and row[3].strip() and row[1].strip():
                        entity_of.setdefault(row[3], row[1])
    if not entity_of:
        return list(BUILTIN_SAMPLE), "built-in sample (data set not found)"
    unique = sorted(entity_of)
    random.Random(seed).shuffle(unique)
    tweets = [Tweet(text, entity_of[text]) for text in unique[:limit]]
    return tweets, f"{data_dir} ({', '.join(used)}), {len(tweets)} texts"
