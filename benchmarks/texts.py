"""Real tweet texts for every benchmark, so all servers and the engine see the same inputs.

The data set is optional: without it the harness still runs on a small built-in sample, and
says so in its results.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

DATA_FILES = ("twitter_validation.csv", "twitter_training.csv")

# Used only when the data set is absent (fresh clone, CI); written for this project.
BUILTIN_SAMPLE: tuple[str, ...] = (
    "I love the new update, everything feels so much faster now!",
    "Worst customer service ever. Three hours on hold and nobody picked up.",
    "The patch notes are out, servers go down for maintenance at 9am.",
    "Honestly this game keeps getting better with every season 🔥",
    "My order arrived broken and the refund form does not even load. Great.",
    "Can't wait for the launch event tonight, who else is watching?",
    "Battery drains in two hours after the latest firmware, please fix this",
    "Just finished the campaign. What a ride, the ending got me.",
    "@support why does the app log me out every single time I open it?",
    "Not sure how I feel about the redesign, some parts are nice, others not.",
    "Shoutout to the team for fixing the bug so quickly, much appreciated",
    "This is the third console that died on me. Never buying again.",
    "new trailer dropped and it looks incredible",
    "Prices went up again and the service got worse. Cancelling my subscription.",
    "Thanks for the quick delivery, the headphones sound amazing",
    "lag lag lag. unplayable tonight",
)


def load_texts(data_dir: Path | None, limit: int = 2000, seed: int = 13) -> tuple[list[str], str]:
    """Up to `limit` non-empty tweet texts, shuffled with `seed`, and where they came from.

    Reads the data set's CSV files (no header: tweet_id, entity, label, text) with a real CSV
    parser; falls back to `BUILTIN_SAMPLE` when none of the files exists.
    """
    texts: list[str] = []
    used: list[str] = []
    if data_dir is not None:
        for name in DATA_FILES:
            path = Path(data_dir) / name
            if not path.is_file():
                continue
            used.append(name)
            with open(path, newline="", encoding="utf-8") as handle:
                for row in csv.reader(handle):
                    if len(row) >= 4 and row[3].strip():
                        texts.append(row[3])
    if not texts:
        return list(BUILTIN_SAMPLE), "built-in sample (data set not found)"
    unique = sorted(set(texts))
    random.Random(seed).shuffle(unique)
    return unique[:limit], f"{data_dir} ({', '.join(used)}), {min(limit, len(unique))} texts"
