"""One protocol across sources (see shared/data/README.md).

- A source with an official test file keeps it; the others get a seeded, stratified dev/test
  split of their own, by id or by normalised text, so copies and retweets never straddle splits.
- twitter_entity keeps the seed's clean protocol (training.protocol).
- Every test text of every source is removed from every training and dev split (normalised
  text); the count is reported per source.
- Dev is pooled across sources and decides everything; each test split is scored once.
- A source's dev may instead be whole files of its training data (`dev_files`, e.g. one year of
  SemEval held out, so dev is drawn the way a later test set is); they are then not trained on,
  nor is any training row that shares a split key with them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.bundle import sha256_file
from training.data import Row
from training.protocol import build_splits, split_groups
from training.reader import normalise, read_source_file
from training.sources import SOURCES, TWITTER_ENTITY, Source, SourceReport, SpecError


@dataclass
class Corpus:
    labels: tuple[str, ...]
    train: list[Row] = field(default_factory=list)
    dev: list[Row] = field(default_factory=list)
    tests: dict[str, list[Row]] = field(default_factory=dict)  # source -> its test split
    reports: list[SourceReport] = field(default_factory=list)
    removed_as_test_copies: dict[str, int] = field(default_factory=dict)
    duplicates_removed: dict[str, int] = field(default_factory=dict)
    data_sha256: dict[str, str] = field(default_factory=dict)
    split_rules: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        def count(rows: Sequence[Row]) -> dict[str, Any]:
            return {
                "rows": len(rows),
                "labels": dict(sorted(Counter(r.label for r in rows).items())),
            }

        by_source = sorted({r.source for r in self.train} | set(self.tests))
        return {
            "protocol": "multi-source clean (training.corpus)",
            "train": count(self.train),
            "dev": count(self.dev),
            "per_source": {
                s: {
                    "split": self.split_rules.get(s, ""),
                    "train": count([r for r in self.train if r.source == s]),
                    "dev": count([r for r in self.dev if r.source == s]),
                    "test": count(self.tests.get(s, [])),
                    "removed_as_test_copies": self.removed_as_test_copies.get(s, 0),
                    "duplicates_removed": self.duplicates_removed.get(s, 0),
                }
                for s in by_source
            },
            "load_reports": [vars(r) for r in self.reports],
            "data_sha256": self.data_sha256,
        }


def build_corpus(
    root: Path,
    sources: Sequence[str | Source],
    labels: Sequence[str],
    *,
    seed: int = 13,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.15,
    max_dev: int = 2000,
    dev_files: Mapping[str, tuple[str, ...]] | None = None,
) -> Corpus:
    """Train/dev pools and one test split per source, decontaminated across sources."""
    corpus = Corpus(labels=tuple(labels))
    held = dict(dev_files or {})
    _check_dev_files(held, [s if isinstance(s, str) else s.name for s in sources])
    for source in sources:
        if source == TWITTER_ENTITY:
            _add_twitter_entity(corpus, root / TWITTER_ENTITY, labels, seed, dev_fraction)
            continue
        spec = SOURCES[source] if isinstance(source, str) else source
        dev = None
        if spec.name in held:
            dev = _held_dev(corpus, root, spec, held[spec.name], labels, seed, max_dev)
        _add_source(corpus, root, spec, labels, seed, dev_fraction, test_fraction, max_dev, dev)
    _remove_test_copies(corpus)
    return corpus


def _check_dev_files(held: Mapping[str, tuple[str, ...]], names: Sequence[str]) -> None:
    """Refuse, before any file is read, held-out dev files the run cannot honour."""
    if TWITTER_ENTITY in held:
        raise SpecError(f"--dev-files: {TWITTER_ENTITY} keeps its clean protocol's dev")
    unknown = sorted(set(held) - set(names))
    if unknown:
        raise SpecError(f"--dev-files: no source named {', '.join(unknown)} in this run")


def _add_twitter_entity(
    corpus: Corpus, folder: Path, labels: Sequence[str], seed: int, dev_fraction: float
) -> None:
    wanted = [label for label in labels if label in ("Negative", "Neutral", "Positive")]
    splits = build_splits(folder, wanted, seed=seed, dev_fraction=dev_fraction)
    corpus.train += splits.train
    corpus.dev += splits.dev
    corpus.tests[TWITTER_ENTITY] = splits.test
    corpus.reports += [
        SourceReport(r.path, r.rows_read, r.rows_kept, dict(r.dropped)) for r in splits.reports
    ]
    corpus.data_sha256.update({f"{TWITTER_ENTITY}/{k}": v for k, v in splits.data_sha256.items()})
    corpus.split_rules[TWITTER_ENTITY] = "seed's clean protocol: test = validation file"


def _add_source(
    corpus: Corpus,
    root: Path,
    spec: Source,
    labels: Sequence[str],
    seed: int,
    dev_fraction: float,
    test_fraction: float,
    max_dev: int,
    held_dev: _HeldDev | None = None,
) -> None:
    files = spec.train_files
    if held_dev is not None:
        files = tuple(f for f in files if f not in held_dev.files)
    pool, dropped = dedupe_by_key(_read(corpus, root, spec, files, labels))
    corpus.duplicates_removed[spec.name] = dropped
    key = f"by {spec.id_col}" if spec.id_col else "by normalised text"
    if held_dev is None:
        dev_share, dev_rule = _dev_share(pool, dev_fraction, max_dev), f"dev {key}"
    else:
        kept = [r for r in pool if r.tweet_id not in held_dev.keys]
        removed, pool, dev_share = len(pool) - len(kept), kept, 0.0
        dev_rule = (
            f"dev = held-out files {list(held_dev.files)} ({held_dev.sampled}), "
            f"{removed} training rows sharing their keys removed"
        )
    if spec.test_files:
        test = _read(corpus, root, spec, spec.test_files, labels)
        fractions = (dev_share, 0.0)
        corpus.split_rules[spec.name] = f"official test {list(spec.test_files)}; {dev_rule}"
    else:
        test = []
        fractions = (dev_share, test_fraction)
        dev_part = dev_rule if held_dev is not None else f"dev {dev_share:.3f}"
        corpus.split_rules[spec.name] = (
            f"seeded stratified split {key} (seed {seed}): {dev_part}, test {test_fraction}"
        )
    train, dev, held = split_groups(pool, fractions, seed)
    corpus.train += train
    corpus.dev += held_dev.rows if held_dev is not None else dev
    corpus.tests[spec.name] = test or held


@dataclass
class _HeldDev:
    """A source's dev taken from whole training files: its rows, and every split key of those
    files (none of them may be trained on, sampled into dev or not)."""

    files: tuple[str, ...]
    rows: list[Row]
    keys: set[int | str]

    @property
    def sampled(self) -> str:
        n = len({r.tweet_id for r in self.rows})
        return f"all {n} keys" if n == len(self.keys) else f"{n} of {len(self.keys)} keys, sampled"


def _held_dev(
    corpus: Corpus,
    root: Path,
    spec: Source,
    files: tuple[str, ...],
    labels: Sequence[str],
    seed: int,
    max_dev: int,
) -> _HeldDev:
    """`files` read as the source's dev: at most `max_dev` keys, a seeded stratified sample."""
    unknown = [f for f in files if f not in spec.train_files]
    if unknown:
        raise SpecError(
            f"--dev-files: {spec.name} has no training file {', '.join(unknown)} "
            f"(its files: {', '.join(spec.train_files)})"
        )
    rows, _ = dedupe_by_key(_read(corpus, root, spec, files, labels))
    keys = {r.tweet_id for r in rows}
    if len(keys) > max_dev:
        rows = split_groups(rows, (max_dev / len(keys), 0.0), seed)[1]
    return _HeldDev(files, rows, keys)


def _read(
    corpus: Corpus, root: Path, spec: Source, files: tuple[str, ...], labels: Sequence[str]
) -> list[Row]:
    rows: list[Row] = []
    for path in spec.paths(root, files):
        got, report = read_source_file(spec, path)
        outside = [r for r in got if r.label not in labels]
        if outside:
            report.dropped[f"not in label set {list(labels)}"] = len(outside)
        rows += [r for r in got if r.label in labels]
        corpus.reports.append(report)
        corpus.data_sha256[f"{spec.name}/{path.name}"] = sha256_file(path)
    return rows


def _dev_share(rows: Sequence[Row], fraction: float, max_dev: int) -> float:
    groups = len({r.tweet_id for r in rows})
    return min(fraction, max_dev / groups) if groups else fraction


def dedupe_by_key(rows: Sequence[Row]) -> tuple[list[Row], int]:
    """One row per split key (a tweet in several files of a source counts once: the first)."""
    seen: set[int | str] = set()
    kept = []
    for row in rows:
        if row.tweet_id not in seen:
            seen.add(row.tweet_id)
            kept.append(row)
    return kept, len(rows) - len(kept)


def _remove_test_copies(corpus: Corpus) -> None:
    tested = {normalise(r.text) for rows in corpus.tests.values() for r in rows}
    removed: Counter[str] = Counter()

    def keep(rows: list[Row]) -> list[Row]:
        out = []
        for r in rows:
            if normalise(r.text) in tested:
                removed[r.source] += 1
            else:
                out.append(r)
        return out

    corpus.train, corpus.dev = keep(corpus.train), keep(corpus.dev)
    corpus.removed_as_test_copies = dict(removed)
