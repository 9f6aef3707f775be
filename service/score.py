"""Offline batch scoring: `python -m service.score FILE` (or `make score IN=FILE`).

CSV, TSV or JSONL in; the same rows out (stdout or --output) with the prediction added: label,
score, a score per label, truncated. The answers are the HTTP API's for the same text: the same
verified bundle, `service.engine.Engine`, the service's drift decision (a bundle whose answers
depend on batch-mates runs one text per session.run, as the service does) and the same
rendering (`payload.render`, 6 decimals). Input is streamed in chunks (memory stays flat on a
file of any length) while a small pool of single-threaded ONNX Runtime runs keeps every core
busy. A bad row (no or empty text, bytes that are not UTF-8, an entity over 100 characters or
one that leaves the text no room) is reported on stderr with its line number and skipped; a bad
file or column stops with one line naming the file and line, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from service.bundle import Bundle, BundleError, load_bundle
from service.engine import Encoded, EncodeError, Engine, Probs, project, view_columns
from service.payload import render
from service.registry import effective_max_batch
from service.scheduler import plan
from service.schema import MAX_ENTITY_CHARS
from service.settings import DEFAULT_BUNDLE, Settings, available_cpus
from service.tables import Format, Reader, Record, TableError, Writer, detect_format, open_output

MODELS = Path("models")
Batch = tuple[list[int], Future[Probs]]  # row indices in the chunk, their probabilities


@dataclass(frozen=True)
class ScoreConfig:
    """Everything a scoring run is told (the CLI's flags, typed, in one place)."""

    input: Path
    output: Path | None = None
    format: Format | None = None
    text_col: str = "text"
    entity_col: str | None = None
    model: str = str(DEFAULT_BUNDLE)
    header: bool = True
    # Measured on 5k tweets, 2 cores (service/README.md, *Offline scoring*): two single-threaded
    # runs side by side beat one run on two threads, as in the service.
    pool_size: int = 0  # concurrent session.run calls; 0 = one per core
    threads: int = 1  # intra-op threads per session.run
    chunk_rows: int = 256  # rows read, tokenized and dispatched together (memory ~ 2 chunks)
    progress: bool | None = None  # None: only when stderr is a terminal
    service: Settings = field(default_factory=lambda: Settings(warmup=False, access_log=False))

    @property
    def pool(self) -> int:
        return self.pool_size or max(1, available_cpus() // max(1, self.threads))


class ScoreError(Exception):
    """A problem with the run's inputs: reported as one line, exit status 2."""


@dataclass
class Summary:
    """What the run did, printed at the end."""

    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    start: float = field(default_factory=time.perf_counter)

    def line(self) -> str:
        seconds = time.perf_counter() - self.start
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{why} {n}" for why, n in self.skipped.most_common())
        labels = ", ".join(f"{label} {n}" for label, n in self.labels.most_common())
        rate = self.rows / seconds if seconds > 0 else 0.0
        return (
            f"scored {self.rows} rows, skipped {skipped}{f' ({reasons})' if reasons else ''} "
            f"in {seconds:.1f} s ({rate:.0f} rows/s); labels: {labels or 'none'}"
        )


# ------------------------------------------------------------------------------- the model


def resolve_bundle(value: str, models: Path = MODELS) -> tuple[Path, str | None]:
    """A bundle folder, or a name under models/ (a folder, a model name or one of a bundle's
    views), and the view it names (None: the model itself)."""
    path = Path(value)
    if (path / "manifest.json").is_file():
        return path, None
    found = sorted(p.parent for p in models.glob("*/manifest.json"))
    for folder in found:
        names = _model_names(folder)
        if folder.name == value or names[:1] == [value]:
            return folder, None
        if value in names:
            return folder, value
    known = ", ".join(n for folder in found for n in _model_names(folder) or [folder.name])
    raise ScoreError(f"--model {value!r}: not a bundle folder, nor a model under {models}/ ({known or 'none'})")  # fmt: skip


def _model_names(folder: Path) -> list[str]:
    """The bundle's model name, then its views' names ([] for an unreadable bundle)."""
    try:
        bundle = load_bundle(folder, verify=False)
    except BundleError:
        return []
    return [bundle.model_name, *bundle.views]


@dataclass(frozen=True)
class Scorer:
    """One verified bundle's engine, run exactly as the service runs it."""

    bundle: Bundle
    engine: Engine
    max_batch: int
    max_tokens: int
    labels: tuple[str, ...]  # the bundle's, or its view's
    columns: tuple[int, ...] | None = None  # a view's columns of the bundle's labels

    @classmethod
    def load(cls, path: Path, config: ScoreConfig, view: str | None = None) -> Scorer:
        bundle = load_bundle(path, verify=True)
        engine = Engine(bundle, threads=config.threads, spin=False)
        settings = config.service
        drift = engine.batch_drift()
        max_batch = effective_max_batch(settings, bundle.model_name, drift)
        if view is None:
            return cls(bundle, engine, max_batch, settings.max_tokens, bundle.labels)
        labels = bundle.views[view]
        columns = view_columns(bundle.labels, labels)
        return cls(bundle, engine, max_batch, settings.max_tokens, labels, columns)

    def scores(self, probs: Probs) -> Probs:
        """The probabilities as the service answers them for this model name."""
        return probs if self.columns is None else project(probs, self.columns)

    def submit(self, executor: Executor, encoded: list[Encoded]) -> list[Batch]:
        """Batches by length (one text per run when batching would change answers)."""
        groups = plan([len(e.ids) for e in encoded], self.max_batch, self.max_tokens)
        return [
            (g, executor.submit(self.engine.infer, [encoded[i].ids for i in g])) for g in groups
        ]


# --------------------------------------------------------------------------------- the run


def check_record(record: Record) -> str | None:
    """Why the API would refuse this row's text or entity (None: it is fine)."""
    text, entity = record.text, record.entity
    if isinstance(text, Exception):
        return f"not a JSON object ({text})"
    if not isinstance(text, str):
        return "no text" if text is None else f"text is not a string ({type(text).__name__})"
    if not text or text.isspace():
        return "empty text"
    if _undecodable(text) or (isinstance(entity, str) and _undecodable(entity)):
        return "undecodable bytes (not UTF-8)"
    if entity is not None and not isinstance(entity, str):
        return f"entity is not a string ({type(entity).__name__})"
    if isinstance(entity, str) and len(entity) > MAX_ENTITY_CHARS:
        return f"entity longer than {MAX_ENTITY_CHARS} characters"
    return None


def _undecodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@dataclass
class Chunk:
    records: list[Record]
    encoded: list[Encoded]
    batches: list[Batch]


class Run:
    """Read → tokenize → infer (pool) → write, with up to two chunks in flight."""

    def __init__(
        self,
        config: ScoreConfig,
        scorer: Scorer,
        reader: Reader,
        writer: Writer,
        records: Iterable[Record],
    ) -> None:
        self.config, self.scorer, self.reader, self.writer = config, scorer, reader, writer
        self.records = records
        self.summary = Summary()
        self.progress = Progress(reader, config.progress)
        self.pair = scorer.bundle.text_pair

    def go(self, executor: Executor) -> Summary:
        in_flight: deque[Chunk] = deque()
        for records in self._chunks():
            in_flight.append(self._dispatch(executor, records))
            if len(in_flight) > 1:
                self._finish(in_flight.popleft())
        while in_flight:
            self._finish(in_flight.popleft())
        self.progress.done()
        return self.summary

    def _chunks(self) -> Iterator[list[Record]]:
        chunk: list[Record] = []
        for record in self.records:
            problem = check_record(record)
            if problem is not None:
                self._skip(record, problem)
                continue
            chunk.append(record)
            if len(chunk) >= self.config.chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _skip(self, record: Record, problem: str) -> None:
        self.summary.skipped[problem.split(" (")[0]] += 1
        self.progress.message(f"{self.reader.path}:{record.line}: {problem}; row skipped")

    def _dispatch(self, executor: Executor, records: list[Record]) -> Chunk:
        encoded, kept = self._encode(records)
        return Chunk(kept, encoded, self.scorer.submit(executor, encoded) if encoded else [])

    def _encode(self, records: list[Record]) -> tuple[list[Encoded], list[Record]]:
        """Token ids; when the chunk fails (an entity that leaves no room), row by row."""
        try:
            return self.scorer.engine.encode(*self._inputs(records)), records
        except EncodeError:
            encoded, kept = [], []
            for record in records:
                try:
                    encoded += self.scorer.engine.encode(*self._inputs([record]))
                    kept.append(record)
                except EncodeError as exc:
                    self._skip(record, str(exc))
            return encoded, kept

    def _inputs(self, records: Sequence[Record]) -> tuple[list[str], list[str] | None]:
        texts = [record.text for record in records]
        if not self.pair or self.config.entity_col is None:
            return texts, None
        return texts, [record.entity or "" for record in records]

    def _finish(self, chunk: Chunk) -> None:
        if not chunk.records:
            return
        probs: Probs = np.empty((len(chunk.records), len(self.scorer.engine.labels)), np.float32)
        for order, future in chunk.batches:
            probs[order] = future.result()
        predictions = render(self.scorer.labels, self.scorer.scores(probs), chunk.encoded)
        for record, prediction in zip(chunk.records, predictions, strict=True):
            self.writer.write(record, prediction)
            self.summary.labels[prediction["label"]] += 1
        self.summary.rows += len(chunk.records)
        self.progress.update(self.summary.rows)


class Progress:
    """rows, rows/s and ETA on stderr, redrawn at most 5 times a second; silent when stderr
    is not a terminal (or when told). Messages go above it."""

    def __init__(self, reader: Reader, show: bool | None, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.show = self.stream.isatty() if show is None else show
        self.reader = reader
        self.start = self.last = time.perf_counter()
        self.rows = 0

    def update(self, rows: int) -> None:
        self.rows = rows
        now = time.perf_counter()
        if self.show and now - self.last >= 0.2:
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        fraction = min(1.0, self.reader.bytes_read / max(1, self.reader.size))
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else 0.0
        self.stream.write(
            f"\r\033[K{self.rows} rows  {self.rows / elapsed:.0f} rows/s  "
            f"{fraction:4.0%}  ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}"
        )
        self.stream.flush()

    def message(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.show else "") + text + "\n")
        if self.show:
            self._draw(time.perf_counter())

    def done(self) -> None:
        if self.show:
            self._draw(time.perf_counter())
            self.stream.write("\n")


# ------------------------------------------------------------------------------------- CLI


def score(config: ScoreConfig) -> Summary:
    """Score `config.input` into `config.output` (stdout when None)."""
    if not config.input.is_file():
        raise ScoreError(f"{config.input}: no such file")
    fmt = detect_format(config.input, config.format)
    folder, view = resolve_bundle(config.model)
    scorer = Scorer.load(folder, config, view)
    if config.entity_col is not None and not scorer.bundle.text_pair:
        raise ScoreError(f"--entity-col: model {scorer.bundle.model_name!r} reads no entity")
    reader = Reader(config.input, fmt, config.text_col, config.entity_col, config.header)
    out = open_output(config.output)
    try:
        with ThreadPoolExecutor(config.pool, thread_name_prefix="score") as executor:
            writer = Writer(out, fmt, scorer.labels)
            records = iter(reader)  # reads the header: the writer needs its columns
            first = next(records, None)
            writer.start(reader.columns)
            run = Run(config, scorer, reader, writer, _replay(first, records))
            return run.go(executor)
    finally:
        out.flush()
        if config.output is None:
            out.detach()  # stdout stays open
        else:
            out.close()
        reader.close()


def _replay(first: Record | None, rest: Iterator[Record]) -> Iterator[Record]:
    """The records, the first of which was taken early (to learn the header first)."""
    if first is not None:
        yield first
    yield from rest


def parse_args(argv: Sequence[str] | None = None) -> ScoreConfig:
    parser = argparse.ArgumentParser(
        prog="python -m service.score",
        description="Score a CSV/TSV/JSONL file with a model bundle; rows out with predictions.",
    )
    parser.add_argument("input", type=Path, help="a .csv, .tsv or .jsonl file")
    parser.add_argument("-o", "--output", type=Path, help="output file (default: stdout)")
    parser.add_argument("--format", choices=["csv", "tsv", "jsonl"], help="default: by suffix")
    parser.add_argument("--text-col", default="text", help="text column or key (default: text)")
    parser.add_argument("--entity-col", help="entity column or key (entity-pair models)")
    parser.add_argument("--model", default=str(DEFAULT_BUNDLE), help="bundle folder or a name under models/")  # fmt: skip
    parser.add_argument("--no-header", action="store_true", help="CSV/TSV without header: columns by number")  # fmt: skip
    parser.add_argument("--pool-size", type=int, default=0, help="concurrent runs (0: one per core)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per run")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    return ScoreConfig(
        input=args.input, output=args.output, format=args.format, text_col=args.text_col,
        entity_col=args.entity_col, model=args.model, header=not args.no_header,
        pool_size=args.pool_size, threads=args.threads, progress=args.progress,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="score: %(message)s")
    try:
        summary = score(config)
    except (ScoreError, TableError, BundleError) as exc:
        print(f"score: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        print(f"score: error: {exc.filename or config.input}: {exc.strerror or exc}", file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print("score: interrupted", file=sys.stderr)
        return 130
    print(summary.line(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
