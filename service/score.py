"""Offline batch scoring: `python -m service.score INPUT` (or `make score IN=FILE`).

CSV, TSV, JSONL or Parquet in (a file, a folder or a glob); the same rows out (stdout or
--output; Parquet for Parquet input or an output named *.parquet) with the prediction added:
label, score, a score per label, truncated. The answers are the HTTP API's for the same text:
the same verified bundle, scored through the Python API (`service.api.Model`: the service's
`Engine`, batching decision and rendering). Two engines: `local` (default) streams the input in
chunks (memory stays flat on a file of any length) while a small pool of single-threaded ONNX
Runtime runs keeps every core busy; `ray` (`service/score_ray.py`, the `ray` extra) runs the
same model on a Ray Data actor pool, on this machine or a cluster. A bad row (no or empty
text, bytes that are not UTF-8, an entity over 100 characters or one that leaves the text no
room) is reported on stderr with its file and line (a Parquet row's index) and skipped; a bad
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
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from service.api import (
    MODELS,
    Model,
    Pending,
    UnknownModel,
    text_problem,
)
from service.api import resolve_bundle as _resolve
from service.bundle import Bundle, BundleError, load_bundle
from service.settings import DEFAULT_BUNDLE, Settings, available_cpus
from service.tables import (
    SUFFIXES,
    Format,
    Inputs,
    Record,
    TableError,
    Writer,
    expand_inputs,
    input_format,
    open_writer,
    output_format,
)

Engine = Literal["local", "ray"]


@dataclass(frozen=True)
class ScoreConfig:
    """Everything a scoring run is told (the CLI's flags, typed, in one place)."""

    input: Path | str  # a file, a folder or a glob
    output: Path | None = None
    format: Format | None = None
    text_col: str = "text"
    entity_col: str | None = None
    model: str = str(DEFAULT_BUNDLE)
    header: bool = True
    # Measured on 5k tweets, 2 cores (service/README.md, *Offline scoring*): two single-threaded
    # runs side by side beat one run on two threads, as in the service.
    pool_size: int = 0  # concurrent session.run calls; 0 = one per core
    threads: int = 1  # intra-op threads per session.run (ray: per actor, = its CPUs)
    chunk_rows: int = 256  # rows read, tokenized and dispatched together (memory ~ 2 chunks)
    progress: bool | None = None  # None: only when stderr is a terminal
    service: Settings = field(default_factory=lambda: Settings(warmup=False, access_log=False))
    engine: Engine = "local"
    ray_address: str | None = None  # None: RAY_ADDRESS, else a Ray started on this machine
    actors: int = 0  # ray: actors (0: what the cluster's CPUs allow, one CPU left for reading)

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
    nodes: Counter[str] = field(default_factory=Counter)  # ray: rows scored per node
    startup_s: float | None = None  # ray: cluster, actors and model ready after this long

    def line(self) -> str:
        seconds = time.perf_counter() - self.start
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{why} {n}" for why, n in self.skipped.most_common())
        labels = ", ".join(f"{label} {n}" for label, n in self.labels.most_common())
        rate = self.rows / seconds if seconds > 0 else 0.0
        line = (
            f"scored {self.rows} rows, skipped {skipped}{f' ({reasons})' if reasons else ''} "
            f"in {seconds:.1f} s ({rate:.0f} rows/s); labels: {labels or 'none'}"
        )
        if self.startup_s is not None:  # the rate once running: what a longer input approaches
            running = seconds - self.startup_s
            line += f"; start-up {self.startup_s:.1f} s, then {self.rows / running if running > 0 else 0:.0f} rows/s"  # fmt: skip
        if self.nodes:
            line += "; rows per node: " + ", ".join(f"{n} {r}" for n, r in sorted(self.nodes.items()))  # fmt: skip
        return line


# ------------------------------------------------------------------------------- the model


def resolve_bundle(value: str, models: Path = MODELS) -> tuple[Path, str | None]:
    """`service.api.resolve_bundle`, its error as the scorer reports it (--model)."""
    try:
        return _resolve(value, models)
    except UnknownModel as exc:
        raise ScoreError(f"--model: {exc}") from None


def find_bundle(config: ScoreConfig) -> tuple[Bundle, str | None]:
    """The bundle the run names, verified against its manifest, and the view it names."""
    folder, view = resolve_bundle(config.model)
    bundle = load_bundle(folder, verify=True)
    if config.entity_col is not None and not bundle.text_pair:
        raise ScoreError(f"--entity-col: model {bundle.model_name!r} reads no entity")
    return bundle, view


def load_model(config: ScoreConfig) -> Model:
    """The model the run names, its engine with `config.threads` per run."""
    bundle, view = find_bundle(config)
    return Model.from_bundle(bundle, view, threads=config.threads, settings=config.service)


# --------------------------------------------------------------------------------- the run


def check_record(record: Record) -> str | None:
    """Why the API would refuse this row's text or entity (None: it is fine)."""
    if isinstance(record.text, Exception):
        return f"not a JSON object ({record.text})"
    return text_problem(record.text, record.entity)


Outcome = dict[str, Any] | str  # a row's prediction, or why it was skipped


@dataclass
class Chunk:
    """Rows on their way through the model: why some cannot be scored (index -> why), and
    the batches of the others."""

    records: list[Record]
    problems: dict[int, str]
    pending: Pending

    @classmethod
    def start(
        cls, model: Model, records: list[Record], entities: bool, executor: Executor | None
    ) -> Chunk:
        """Check every row as the API would, encode and dispatch the others (`executor`
        None: they run in `outcomes`). The one path of both engines."""
        problems = {i: why for i, r in enumerate(records) if (why := check_record(r)) is not None}
        good = [i for i in range(len(records)) if i not in problems]
        texts = [records[i].text for i in good]
        pairs = [records[i].entity for i in good] if entities else None
        pending = model.start(texts, pairs, executor)
        problems.update({good[j]: why for j, why in pending.problems.items()})
        return cls(records, problems, pending)

    def outcomes(self, model: Model) -> list[Outcome]:
        """Per row, in order: its prediction, or why it was skipped."""
        predictions = iter(model.finish(self.pending))
        return [self.problems.get(i) or next(predictions) for i in range(len(self.records))]


class Sink:
    """Where scored rows go, whichever engine scored them: the writer, the summary (rows,
    skipped by reason, labels) and the progress line; a bad row is named on stderr."""

    def __init__(self, writer: Writer, progress: Progress, summary: Summary | None = None) -> None:
        self.writer, self.progress = writer, progress
        self.summary = summary or Summary()

    def take(self, record: Record, outcome: Outcome) -> None:
        """One row, in input order: written, or named as skipped."""
        if isinstance(outcome, str):
            self.summary.skipped[outcome.split(" (")[0]] += 1
            self.progress.message(f"{record.where()}: {outcome}; row skipped")
            return
        self.writer.write(record, outcome)
        self.summary.labels[outcome["label"]] += 1
        self.summary.rows += 1


def chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """The records, `size` at a time."""
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Run:
    """Read → tokenize → infer (pool) → write, with up to two chunks in flight."""

    def __init__(
        self, config: ScoreConfig, model: Model, sink: Sink, records: Iterable[Record]
    ) -> None:
        self.config, self.model, self.sink, self.records = config, model, sink, records
        self.entities = model.text_pair and config.entity_col is not None

    def go(self, executor: Executor) -> Summary:
        in_flight: deque[Chunk] = deque()
        for records in chunks(self.records, self.config.chunk_rows):
            in_flight.append(Chunk.start(self.model, records, self.entities, executor))
            if len(in_flight) > 1:
                self._finish(in_flight.popleft())
        while in_flight:
            self._finish(in_flight.popleft())
        self.sink.progress.done()
        return self.sink.summary

    def _finish(self, chunk: Chunk) -> None:
        for record, outcome in zip(chunk.records, chunk.outcomes(self.model), strict=True):
            self.sink.take(record, outcome)
        self.sink.progress.update(self.sink.summary.rows)


class Measured(Protocol):
    """How much of the input has been read (the progress line's ETA)."""

    size: int

    @property
    def bytes_read(self) -> int: ...


class Progress:
    """rows, rows/s and ETA on stderr, redrawn at most 5 times a second; silent when stderr
    is not a terminal (or when told). Messages go above it."""

    def __init__(self, reader: Measured, show: bool | None, stream: IO[str] | None = None) -> None:
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
    """Score `config.input` into `config.output` (stdout when None) with `config.engine`."""
    paths = expand_inputs(config.input)
    fmt = input_format(paths, config.format)
    output_format(fmt, config.output)  # a run that cannot write stops before loading anything
    inputs = Inputs(paths, fmt, config.text_col, config.entity_col, config.header)
    if config.engine == "ray":
        from service.score_ray import score_ray  # Ray is imported only when asked for

        return score_ray(config, inputs)
    model = load_model(config)
    writer = open_writer(config.output, fmt, model.labels, config.header)
    try:
        records = inputs.start()  # reads the header: the writer needs its columns
        writer.start(inputs.columns, inputs.schema)
        sink = Sink(writer, Progress(inputs, config.progress))
        with ThreadPoolExecutor(config.pool, thread_name_prefix="score") as executor:
            return Run(config, model, sink, records).go(executor)
    finally:
        writer.close()
        inputs.close()


def parse_args(argv: Sequence[str] | None = None) -> ScoreConfig:
    parser = argparse.ArgumentParser(
        prog="python -m service.score",
        description="Score CSV/TSV/JSONL/Parquet files with a model; rows out with predictions.",
    )
    parser.add_argument("input", help="a .csv, .tsv, .jsonl or .parquet file, a folder of them, or a glob (quoted)")  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, help="output file (default: stdout; *.parquet: Parquet)")  # fmt: skip
    parser.add_argument("--format", choices=sorted(set(SUFFIXES.values())), help="input format (default: by suffix)")  # fmt: skip
    parser.add_argument("--text-col", default="text", help="text column or key (default: text)")
    parser.add_argument("--entity-col", help="entity column or key (entity-pair models)")
    parser.add_argument("--model", default=str(DEFAULT_BUNDLE), help="bundle folder or a name under models/")  # fmt: skip
    parser.add_argument("--no-header", action="store_true", help="CSV/TSV without header: columns by number")  # fmt: skip
    parser.add_argument("--engine", choices=["local", "ray"], default="local", help="local: a thread pool here (default); ray: a Ray Data actor pool (pip install .[ray])")  # fmt: skip
    parser.add_argument("--ray-address", default=None, help="ray: the cluster to join (default: $RAY_ADDRESS, else a Ray started on this machine)")  # fmt: skip
    parser.add_argument("--actors", type=int, default=0, help="ray: actors (0: the cluster's CPUs / --threads, one CPU left for reading)")  # fmt: skip
    parser.add_argument("--pool-size", type=int, default=0, help="local: concurrent runs (0: one per core)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per run (ray: per actor, = the CPUs it reserves)")  # fmt: skip
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    for flag, value, least in (("--threads", args.threads, 1), ("--actors", args.actors, 0), ("--pool-size", args.pool_size, 0)):  # fmt: skip
        if value < least:
            parser.error(f"{flag} must be >= {least}")
    return ScoreConfig(
        input=args.input, output=args.output, format=args.format, text_col=args.text_col,
        entity_col=args.entity_col, model=args.model, header=not args.no_header,
        pool_size=args.pool_size, threads=args.threads, progress=args.progress,
        engine=args.engine, ray_address=args.ray_address, actors=args.actors,
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
