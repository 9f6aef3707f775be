"""Real tweet texts for every benchmark, so all servers and the engine see the same inputs.

Two workloads: `twitter-entity`, the Twitter Entity tweets with their entities (sent to
entity-pair models), and `semeval`, the SemEval-2017 test tweets, text only. The Twitter Entity
data set is optional: without it the harness still runs on a small built-in sample, and says
so in its results; without the SemEval file that workload is skipped with a note.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections.abc import Iterable
from dataclasses import dataclass
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
    tweets = [Tweet(text, entity_of[text]) for text in sample(entity_of, limit, seed)]
    return tweets, f"{data_dir} ({', '.join(used)}), {len(tweets)} texts"


def sample(texts: Iterable[str], limit: int, seed: int) -> list[str]:
    """Up to `limit` of the distinct `texts`, in an order fixed by `seed` alone (not by the
    file's), so every workload is drawn alike and a run is repeatable."""
    unique = sorted(set(texts))
    random.Random(seed).shuffle(unique)
    return unique[:limit]


WORKLOADS = ("twitter-entity", "semeval")  # the first selected gets the whole run
SEMEVAL = "semeval2017"  # its source spec (folder, test file, columns, clean-up): training.sources


@dataclass(frozen=True)
class Workload:
    """The texts one workload sends, their entities (entity-pair models only) and their source."""

    name: str
    texts: list[str]
    entities: list[str] | None
    source: str


def load_semeval(data_root: Path, limit: int = 2000, seed: int = 13) -> tuple[list[str], str]:
    """Up to `limit` distinct SemEval-2017 test tweets, text only, read and cleaned as training
    reads them; FileNotFoundError (naming the file) when it is absent."""
    from training.reader import read_source_file
    from training.sources import SOURCES

    spec = SOURCES[SEMEVAL]
    (path,) = spec.paths(data_root, spec.test_files)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    rows, _ = read_source_file(spec, path)
    texts = sample((row.text for row in rows), limit, seed)
    return texts, f"{path}, {len(texts)} texts, text only"


def load_workloads(args: argparse.Namespace, text_pair: bool) -> tuple[list[Workload], list[str]]:
    """The workloads `--workload` selects, in `WORKLOADS` order, and a note for each that cannot
    be read. The SemEval file is looked for under `--data-root` (default: the folder above
    `--data`)."""
    chosen = WORKLOADS if args.workload == "both" else (args.workload,)
    out: list[Workload] = []
    notes: list[str] = []
    if "twitter-entity" in chosen:
        tweets, source = load_tweets(args.data, limit=args.texts)
        # An entity-pair model gets each tweet's entity (and so do the peers that serve it).
        entities = [t.entity for t in tweets] if text_pair else None
        out.append(Workload("twitter-entity", [t.text for t in tweets], entities, source))
    if "semeval" in chosen:
        root = args.data_root or (args.data.parent if args.data else None)
        try:
            if root is None:
                raise FileNotFoundError("no --data-root (nor --data to look beside)")
            texts, source = load_semeval(root, limit=args.texts)
            out.append(Workload("semeval", texts, None, source))
        except (FileNotFoundError, ValueError) as exc:
            notes.append(f"semeval workload skipped: {exc}")
    return out, notes
