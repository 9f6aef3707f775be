"""Labelled tweet sources as data: one declarative spec per source, one reader for all of them.

A spec says where the rows are (files, columns, encoding), what its labels mean (a map onto the
model's classes, and which labels are not sentiment and are dropped), how it is split (its own
official test file, or a seeded split by id or normalised text) and under which terms it may be
used. Adding a source is a spec, not code. A user's own file is a spec built from CLI flags or
read from a small TOML file (`spec_from_toml`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from service.tables import SUFFIXES

CLASSES = ("Negative", "Neutral", "Positive")
FORMATS = tuple(dict.fromkeys(SUFFIXES.values()))  # csv, tsv, jsonl: the scorer's formats


class SpecError(ValueError):
    """A data spec that cannot describe a file (unknown field, bad value)."""


@dataclass(frozen=True)
class Source:
    name: str
    folder: str  # under the data root; "" for a user's file given by path
    train_files: tuple[str, ...]
    text_col: str
    label_col: str
    label_map: Mapping[str, str]  # raw label -> one of CLASSES
    drop_labels: tuple[str, ...] = ()  # not sentiment: counted and skipped
    test_files: tuple[str, ...] = ()  # an official test split; else a seeded split of its own
    id_col: str | None = None  # split key; None: normalised text (retweets never straddle)
    entity_col: str | None = None
    format: str = "csv"
    encoding: str = "utf-8"
    clean: tuple[str, ...] = ()  # artefact repairs, see training.reader.CLEANERS
    terms: str = ""
    commercial: bool = True  # False: never in a shipped (Apache-2.0) bundle unless opted in
    note: str = ""

    def paths(self, root: Path, files: tuple[str, ...]) -> list[Path]:
        base = root / self.folder if self.folder else root
        return [base / f for f in files]


def _map(neg: tuple[str, ...], neu: tuple[str, ...], pos: tuple[str, ...]) -> dict[str, str]:
    return {
        **dict.fromkeys(neg, "Negative"),
        **dict.fromkeys(neu, "Neutral"),
        **dict.fromkeys(pos, "Positive"),
    }


_SEMEVAL_TRAIN = tuple(
    f"twitter-{name}-A.csv"
    for name in (
        "2013train",
        "2013dev",
        "2013test",
        "2014test",
        "2014sarcasm",
        "2015train",
        "2015test",
        "2016train",
        "2016dev",
        "2016devtest",
        "2016test",
    )
)

SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="semeval2017",
            folder="semeval2017_task4a",
            train_files=_SEMEVAL_TRAIN,
            test_files=("twitter-2017test-A.csv",),
            id_col="tweet_id",
            text_col="text",
            label_col="label",
            label_map=_map(("negative",), ("neutral",), ("positive",)),
            clean=("json_escapes", "html", "wrapping_quotes"),
            terms="SemEval research distribution; Twitter terms",
            note="official test = twitter-2017test-A (the TweetEval sentiment test set)",
        ),
        Source(
            name="sanders",
            folder="sanders_twitter",
            train_files=("full-corpus.csv",),
            id_col="TweetId",
            text_col="TweetText",
            label_col="Sentiment",
            entity_col="Topic",
            label_map=_map(("negative",), ("neutral",), ("positive",)),
            drop_labels=("irrelevant",),
            terms="free for training and testing (author)",
        ),
        Source(
            name="apple",
            folder="apple_tweets",
            train_files=("Apple-Twitter-Sentiment-DFE.csv",),
            text_col="text",
            label_col="sentiment",
            label_map=_map(("1",), ("3",), ("5",)),
            drop_labels=("not_relevant",),
            clean=("html",),
            terms="CrowdFlower Data for Everyone (terms not stated)",
        ),
        Source(
            name="sxsw",
            folder="sxsw_brand_emotion",
            train_files=("judge-1377884607_tweet_product_company.csv",),
            text_col="tweet_text",
            label_col="is_there_an_emotion_directed_at_a_brand_or_product",
            label_map=_map(
                ("Negative emotion",),
                ("No emotion toward brand or product",),
                ("Positive emotion",),
            ),
            drop_labels=("I can't tell",),
            clean=("html",),
            terms="CrowdFlower Data for Everyone (terms not stated)",
        ),
        Source(
            name="self_driving",
            folder="self_driving_car_tweets",
            train_files=("Twitter-sentiment-self-drive-DFE.csv",),
            text_col="text",
            label_col="sentiment",
            label_map=_map(("1", "2"), ("3",), ("4", "5")),
            drop_labels=("not_relevant",),
            clean=("html",),
            terms="CrowdFlower Data for Everyone (terms not stated)",
        ),
        Source(
            name="coachella",
            folder="coachella_2015",
            train_files=("Coachella-2015-2-DFE.csv",),
            text_col="text",
            label_col="coachella_sentiment",
            label_map=_map(("negative",), ("neutral",), ("positive",)),
            drop_labels=("cant tell",),
            clean=("html",),
            terms="CrowdFlower Data for Everyone (terms not stated)",
        ),
        Source(
            name="us_airline",
            folder="us_airline_tweets",
            train_files=("Tweets.csv",),
            id_col="tweet_id",
            text_col="text",
            label_col="airline_sentiment",
            entity_col="airline",
            label_map=_map(("negative",), ("neutral",), ("positive",)),
            clean=("html",),
            terms="CC BY-NC-SA 4.0 (non-commercial)",
            commercial=False,
        ),
        Source(
            name="gop_debate",
            folder="gop_debate_tweets",
            train_files=("Sentiment.csv",),
            id_col="id",
            text_col="text",
            label_col="sentiment",
            label_map=_map(("Negative",), ("Neutral",), ("Positive",)),
            clean=("html",),
            terms="CC BY-NC-SA 4.0 (non-commercial)",
            commercial=False,
        ),
    )
}

# twitter_entity keeps the seed's own clean protocol (training.protocol); it is named here so
# that `--sources` can list it beside the others.
TWITTER_ENTITY = "twitter_entity"
TWITTER_ENTITY_TERMS = "Kaggle release"
# What the shipped bundles train on: every source whose terms allow an Apache-2.0 release.
DEFAULT_SOURCES = (
    "semeval2017",
    TWITTER_ENTITY,
    "sanders",
    "apple",
    "sxsw",
    "self_driving",
    "coachella",
)


def parse_sources(value: str) -> list[str]:
    """`--sources` as given on a command line: comma-separated names, or 'default'."""
    if value.strip() == "default":
        return list(DEFAULT_SOURCES)
    return [name.strip() for name in value.split(",") if name.strip()]


def resolve(names: list[str], allow_noncommercial: bool = False) -> list[str]:
    """Check source names; non-commercial sets need an explicit opt-in."""
    known = {*SOURCES, TWITTER_ENTITY}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SpecError(f"unknown source(s) {unknown}; known: {sorted(known)}")
    restricted = [n for n in names if n in SOURCES and not SOURCES[n].commercial]
    if restricted and not allow_noncommercial:
        raise SpecError(
            f"{restricted} are non-commercial (CC BY-NC-SA): pass --allow-noncommercial to opt in"
        )
    return names


def user_source(path: Path, **flags: Any) -> Source:
    """A spec for one user file from CLI flags (`--text-col`, `--label-col`, ...)."""
    path = Path(path)
    fmt = flags.pop("format", None) or _format_of(path)
    label_map = flags.pop("label_map", None) or {c.lower(): c for c in CLASSES}
    spec = {
        "name": flags.pop("name", None) or path.stem,
        "folder": "",
        "train_files": (str(path),),
        "format": fmt,
        "label_map": label_map,
        **{k: v for k, v in flags.items() if v is not None},
    }
    return _build(spec, str(path))


def spec_from_toml(path: Path) -> Source:
    """Read a data spec: the Source fields as TOML keys; files are relative to the spec's folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"{path}: {exc}") from exc
    raw.setdefault("name", path.stem)
    raw.setdefault("folder", str(path.parent))
    return _build(raw, str(path))


def _build(raw: dict[str, Any], where: str) -> Source:
    allowed = {f.name for f in fields(Source)}
    extra = sorted(set(raw) - allowed)
    if extra:
        raise SpecError(f"{where}: unknown spec key(s) {extra}; known: {sorted(allowed)}")
    for key in ("train_files", "test_files", "drop_labels", "clean"):
        if isinstance(raw.get(key), str):
            raw[key] = (raw[key],)
        if key in raw:
            raw[key] = tuple(raw[key])
    missing = [k for k in ("train_files", "text_col", "label_col") if not raw.get(k)]
    if missing:
        raise SpecError(f"{where}: missing {missing}")
    label_map = {str(k): v for k, v in (raw.get("label_map") or {}).items()}
    bad = {k: v for k, v in label_map.items() if v not in CLASSES}
    if bad:
        raise SpecError(f"{where}: label_map targets must be one of {CLASSES}, got {bad}")
    if raw.get("format", "csv") not in FORMATS:
        raise SpecError(f"{where}: format must be one of {FORMATS}")
    raw["label_map"] = label_map
    return Source(**raw)


def _format_of(path: Path) -> str:
    return SUFFIXES.get(path.suffix.lower(), "csv")


@dataclass
class SourceReport:
    """What one read kept, dropped and why: printed, and stored in metrics.json."""

    path: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
