"""`python -m benchmarks.bundles`: bundles side by side on one source's test tweets.

Two figures per bundle, on the same texts in the same run:
- tokens per tweet as the bundle reads them (its declared normalisation applied), beside the
  raw text's count with the same tokenizer, for every source (`--tokens`);
- engine texts/s in the service's plan for one-tweet requests (`benchmarks.limit.service_plan`:
  one text per run, one single-thread session per core, no HTTP), measured in turns
  (A B B A ...) so that the machine's drift lands on every bundle alike; the ratios are to the
  first bundle.

    python -m benchmarks.bundles --bundle old/sentiment-3class --bundle models/sentiment-3class \
        --data ../shared/data --source semeval2017 --tokens
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from service.bundle import Bundle, load_bundle
from service.preprocess import TWEET_1, preprocessor
from service.settings import Settings
from training.corpus import build_corpus
from training.data import Row
from training.sources import DEFAULT_SOURCES, parse_sources

CLASSES = ("Negative", "Neutral", "Positive")


def token_counts(tokenizer_path: Path, rows: Sequence[Row], preprocess: str) -> dict[str, Any]:
    """Mean WordPiece tokens per tweet (text only, [CLS] and [SEP] included), raw and through
    `preprocess`, and the share of tweets with an [UNK] token."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    normalise = preprocessor(preprocess)
    assert normalise is not None
    unk = tokenizer.token_to_id("[UNK]")
    out: dict[str, Any] = {"tweets": len(rows)}
    for name, texts in (
        ("raw", [r.text for r in rows]),
        (preprocess, [normalise(r.text) for r in rows]),
    ):
        encoded = tokenizer.encode_batch(texts)
        out[name] = {
            "tokens_per_tweet": round(float(np.mean([len(e.ids) for e in encoded])), 2),
            "with_unk": round(float(np.mean([unk in e.ids for e in encoded])), 4),
        }
    return out


def engine_turns(
    bundles: Sequence[Bundle], rows: Sequence[Row], rounds: int, seconds: float
) -> list[dict[str, Any]]:
    """texts/s per bundle, pooled over `rounds` turns in A B B A order, one text per run."""
    from benchmarks.limit import service_plan

    settings = Settings(access_log=False, warmup=False)
    texts = [r.text for r in rows]
    done: dict[int, list[float]] = {i: [] for i in range(len(bundles))}
    for turn in range(rounds):
        order = list(range(len(bundles)))
        for i in order if turn % 2 == 0 else order[::-1]:
            bundle = bundles[i]
            entities = [r.entity for r in rows] if bundle.text_pair else None
            result = service_plan(bundle, texts, entities, settings, 1, seconds)
            done[i].append(result["texts_per_s"])
            print(f"  turn {turn + 1} {bundle.path}: {result['texts_per_s']:.1f} texts/s")
    base = float(np.median(done[0]))
    return [
        {
            "bundle": str(bundle.path),
            "preprocess": bundle.preprocess,
            "texts_per_s_by_turn": done[i],
            "texts_per_s_median": float(np.median(done[i])),
            "ratio_to_first": round(float(np.median(done[i])) / base, 3),
        }
        for i, bundle in enumerate(bundles)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bundles", description=__doc__)
    p.add_argument("--bundle", type=Path, action="append", required=True)
    p.add_argument("--data", type=Path, required=True, help="the folder holding the sources")
    p.add_argument("--sources", default="default", help=f"'default': {','.join(DEFAULT_SOURCES)}")
    p.add_argument("--source", default="semeval2017", help="whose test tweets the engines run")
    p.add_argument("--rounds", type=int, default=4, help="0: tokens only")
    p.add_argument("--seconds", type=float, default=10.0, help="per bundle per turn")
    p.add_argument("--tokens", action="store_true", help="also tokens per tweet, every source")
    p.add_argument("--out", type=Path, help="write the result as JSON")
    args = p.parse_args(argv)
    corpus = build_corpus(args.data, parse_sources(args.sources), CLASSES)
    if args.source not in corpus.tests:
        p.error(f"--source {args.source!r}: not among {sorted(corpus.tests)}")
    bundles = [load_bundle(path) for path in args.bundle]
    result: dict[str, Any] = {"source": args.source, "tweets": len(corpus.tests[args.source])}
    if args.tokens:
        tokenizer = bundles[-1].tokenizer_path
        result["tokens"] = {
            name: token_counts(tokenizer, rows, TWEET_1) for name, rows in corpus.tests.items()
        }
        for name, counts in result["tokens"].items():
            print(f"{name}: {json.dumps(counts)}")
    rows = corpus.tests[args.source]
    result["engine"] = engine_turns(bundles, rows, args.rounds, args.seconds) if args.rounds else []
    for row in result["engine"]:
        print(f"{row['bundle']}: {row['texts_per_s_median']:.1f} texts/s, x{row['ratio_to_first']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
