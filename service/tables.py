"""Row-by-row readers and writers for the offline scorer: CSV, TSV, JSONL and Parquet.

Streams: one record at a time in, one out, so memory does not grow with the file. Every record
keeps its file and line number (the first physical line of a CSV record; a Parquet row's index)
so a bad row can be named. Bytes that are not UTF-8 are kept (surrogateescape) and written back
unchanged; the scorer refuses them only in the column it must read. An input is a file, a
folder or a glob (`expand_inputs`); its files are read one after the other, as one table.
Parquet's reader and writer are in `service.parquet` (pyarrow, an optional extra, is imported only
when a Parquet file is read or written).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import IO, Any, Literal, Protocol

Format = Literal["csv", "tsv", "jsonl", "parquet"]
SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
DELIMITERS = {"csv": ",", "tsv": "\t"}
ADDED = ("label", "score", "scores", "truncated")


class TableError(Exception):
    """The file cannot be read as its format says (the message names the file and line)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One input row: its line, its fields as read, and the cells the scorer needs (None:
    absent; a non-string JSON value is kept as is so the scorer can name it)."""

    line: int  # CSV/TSV/JSONL: the line, from 1; Parquet: the row's index in its file, from 0
    fields: list[str] | dict[str, Any]
    text: Any
    entity: Any
    path: str = ""  # the file it came from
    row: bool = False  # `line` is a row index (Parquet)

    def where(self) -> str:
        """The record's place, as a bad row is named: FILE:LINE, or FILE: row N."""
        return f"{self.path}: row {self.line}" if self.row else f"{self.path}:{self.line}"


def detect_format(path: Path, given: str | None) -> Format:
    if given is not None:
        return SUFFIXES["." + given]
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise TableError(f"{path}: unknown format {suffix or '(no suffix)'!r}; use --format")
    return SUFFIXES[suffix]


def expand_inputs(spec: str | Path) -> list[Path]:
    """The files an input names: a file; a folder's files of a known format (recursively, in
    path order: a partitioned Parquet data set); or a glob's matches, in path order."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in SUFFIXES]
        if not found:
            raise TableError(f"{path}: no {'/'.join(sorted(set(SUFFIXES.values())))} file in this folder")  # fmt: skip
        return found
    if glob.has_magic(str(spec)):
        matches = [Path(p) for p in sorted(glob.glob(str(spec), recursive=True))]
        found = [p for p in matches if p.is_file()]
        if not found:
            raise TableError(f"{spec}: matches no file")
        return found
    raise TableError(f"{spec}: no such file")


def input_format(paths: Sequence[Path], given: str | None) -> Format:
    """The one format of every input file (by suffix, or `given`)."""
    formats = {path: detect_format(path, given) for path in paths}
    first = formats[paths[0]]
    for path, fmt in formats.items():
        if fmt != first:
            raise TableError(f"{path}: {fmt}, but {paths[0]} is {first}: one format per run")
    return first


class _Counted(io.RawIOBase):
    """A binary file that counts the bytes read through it (progress without tell())."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.count += n or 0
        return int(n or 0)


class Source(Protocol):
    """What the scorer reads: records, their columns, and how far it got (progress)."""

    path: Path
    columns: list[str] | None
    schema: Any  # a Parquet file's pyarrow schema (None for text formats)
    size: int

    @property
    def bytes_read(self) -> int: ...
    def __iter__(self) -> Iterator[Record]: ...
    def close(self) -> None: ...


def open_reader(
    path: Path, fmt: Format, text_col: str, entity_col: str | None, header: bool
) -> Source:
    """The reader of one file of format `fmt`."""
    if fmt == "parquet":
        from service.parquet import ParquetReader  # pyarrow only for Parquet

        return ParquetReader(path, text_col, entity_col)
    return Reader(path, fmt, text_col, entity_col, header)


class Reader:
    """Records of one text file; `columns` (CSV/TSV with a header) and `bytes_read` for
    progress."""

    schema = None

    def __init__(
        self, path: Path, fmt: Format, text_col: str, entity_col: str | None, header: bool
    ) -> None:
        self.path, self.fmt = path, fmt
        self.name = str(path)
        self.text_col, self.entity_col = text_col, entity_col
        self.header = header
        self.size = path.stat().st_size
        self._counted = _Counted(open(path, "rb"))  # noqa: SIM115 - closed by close()
        self.columns: list[str] | None = None

    @property
    def bytes_read(self) -> int:
        return self._counted.count

    def close(self) -> None:
        self._counted.raw.close()

    def __iter__(self) -> Iterator[Record]:
        if self.fmt == "jsonl":
            return self._jsonl()
        return self._delimited()

    def _text(self) -> io.TextIOWrapper:
        buffered = io.BufferedReader(self._counted, 1 << 16)
        return io.TextIOWrapper(buffered, "utf-8", errors="surrogateescape", newline="")

    def _delimited(self) -> Iterator[Record]:
        reader = csv.reader(self._text(), delimiter=DELIMITERS[self.fmt])
        first = 1
        try:
            if self.header:
                self.columns = next(reader, [])
                first = reader.line_num + 1
            text_at = self._index(self.text_col, "--text-col")
            entity_at = (
                None if self.entity_col is None else self._index(self.entity_col, "--entity-col")
            )
            for row in reader:
                line, first = first, reader.line_num + 1
                if not row:
                    continue  # a blank line is no record
                text = row[text_at] if text_at < len(row) else None
                entity = None if entity_at is None or entity_at >= len(row) else row[entity_at]
                yield Record(line, row, text, entity, self.name)
        except csv.Error as exc:
            raise TableError(f"{self.path}:{reader.line_num}: not valid {self.fmt.upper()}: {exc}") from None  # fmt: skip

    def _index(self, column: str, flag: str) -> int:
        if self.columns is None:
            if not column.isdigit():
                raise TableError(f"{self.path}: {flag} {column!r}: without a header, columns are numbers (0 = first)")  # fmt: skip
            return int(column)
        if column in self.columns:
            return self.columns.index(column)
        shown = ", ".join(self.columns)
        raise TableError(f"{self.path}:1: no column {column!r} ({flag}); the header has: {shown}")

    def _jsonl(self) -> Iterator[Record]:
        for line, raw in enumerate(io.BufferedReader(self._counted, 1 << 16), start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8", errors="surrogateescape"))
            except ValueError as exc:
                value = exc
            if not isinstance(value, dict):
                yield Record(line, {}, value, None, self.name)  # the scorer reports it
                continue
            yield Record(line, value, value.get(self.text_col), self._entity(value), self.name)

    def _entity(self, value: dict[str, Any]) -> Any:
        return None if self.entity_col is None else value.get(self.entity_col)


class Inputs:
    """Every file of one input read as one table: the first file's columns (or schema) are
    the output's, and every other file must have the same ones."""

    def __init__(
        self,
        paths: Sequence[Path],
        fmt: Format,
        text_col: str,
        entity_col: str | None,
        header: bool,
    ) -> None:
        self.paths, self.fmt = list(paths), fmt
        self.path = self.paths[0]
        self.text_col, self.entity_col, self.header = text_col, entity_col, header
        sizes = [path.stat().st_size for path in self.paths]
        self.size = sum(sizes)
        self.before = dict(zip(self.paths, accumulate([0, *sizes[:-1]]), strict=True))
        self.current: Source | None = None
        self.done = 0  # bytes of the files read to their end
        self.columns: list[str] | None = None
        self.schema: Any = None

    @property
    def bytes_read(self) -> int:
        """How far the reading got, counting the files before the current one."""
        current = self.current
        return self.done if current is None else self.before[current.path] + current.bytes_read

    def open(self, path: Path) -> Source:
        """The reader of one of the files."""
        return open_reader(path, self.fmt, self.text_col, self.entity_col, self.header)

    def head(self) -> None:
        """Learn the first file's columns (a text file's header, a Parquet file's schema)."""
        first = self.open(self.paths[0])
        try:
            next(iter(first), None)
            self.columns, self.schema = first.columns, first.schema
        finally:
            first.close()

    def start(self) -> Iterator[Record]:
        """Every file's records in turn; the first file's columns are known once this
        returns."""
        self.head()
        return (record for path in self.paths for record in self.read(path))

    def read(self, path: Path) -> Iterator[Record]:
        """One file's records, its columns checked against the first file's (after `head`)."""
        reader = self.current = self.open(path)
        try:
            records = iter(reader)
            first = next(records, None)  # a text file's header comes with its first record
            self.check(reader)
            if first is not None:
                yield first
            yield from records
            self.done = self.before[path] + reader.size
        finally:
            reader.close()
            self.current = None

    def check(self, reader: Source) -> None:
        """Every file has the first one's columns (the output has one header)."""
        same = reader.columns == self.columns
        if same and self.schema is not None:
            same = reader.schema.equals(self.schema)
        if not same:
            raise TableError(f"{reader.path}: its columns differ from {self.path}'s ({_columns(reader)} vs {', '.join(self.columns or [])}): score them apart")  # fmt: skip

    def close(self) -> None:
        if self.current is not None:
            self.current.close()


def _columns(reader: Source) -> str:
    if reader.schema is not None:
        return ", ".join(f"{f.name}: {f.type}" for f in reader.schema)
    return ", ".join(reader.columns or [])


def output_format(fmt: Format, output: Path | None) -> Format:
    """What a run writes: Parquet for Parquet input or an output named *.parquet, else the
    input's text format."""
    if fmt == "parquet" or (output is not None and SUFFIXES.get(output.suffix.lower()) == "parquet"):  # fmt: skip
        if output is None:
            raise TableError("Parquet output needs a file: --output FILE.parquet")
        if fmt == "jsonl":
            raise TableError(f"{output}: Parquet output reads CSV/TSV (with a header) or Parquet; JSONL rows have no fixed columns")  # fmt: skip
        return "parquet"
    return fmt


def open_writer(
    output: Path | None, fmt: Format, labels: Sequence[str], header: bool = True
) -> Writer:
    """The writer of a run whose input is `fmt` (see `output_format`), into `output` (None:
    stdout)."""
    out_fmt = output_format(fmt, output)
    if out_fmt == "parquet":
        assert output is not None
        if not header and fmt != "parquet":
            raise TableError("Parquet output from CSV/TSV needs a header (its column names)")
        from service.parquet import ParquetWriter

        return ParquetWriter(output, labels)
    return Writer(open_output(output), out_fmt, labels, stdout=output is None)


def prediction_names(columns: Sequence[str] | None, labels: Sequence[str]) -> dict[str, str]:
    """The added fields' names: prefixed `predicted_` if the input has a field so named."""
    taken = set(columns or ())
    flat = {"label", "score", "truncated"} | {f"score_{label}" for label in labels}
    if taken & (set(ADDED) | flat):
        return {name: f"predicted_{name}" for name in ADDED}
    return dict(zip(ADDED, ADDED, strict=True))


def flat_names(names: dict[str, str], labels: Sequence[str]) -> list[str]:
    """The added columns of a CSV, TSV or Parquet output: a score column per label."""
    score = names["score"]
    return [names["label"], score, *[f"{score}_{label}" for label in labels], names["truncated"]]


class Writer:
    """The input's records with the prediction added, in the input's text format."""

    def __init__(
        self, out: io.TextIOWrapper, fmt: Format, labels: Sequence[str], stdout: bool = False
    ) -> None:
        self.out, self.fmt, self.labels = out, fmt, tuple(labels)
        self.stdout = stdout
        self._csv = None if fmt == "jsonl" else csv.writer(out, delimiter=DELIMITERS[fmt], lineterminator="\n")  # fmt: skip
        self.names = dict(zip(ADDED, ADDED, strict=True))

    def start(self, columns: Sequence[str] | None, schema: Any = None) -> None:
        """The header (CSV/TSV with one); added names get a prefix if the input has them."""
        self.names = prediction_names(columns, self.labels)
        if self._csv is not None and columns is not None:
            self._csv.writerow([*columns, *flat_names(self.names, self.labels)])

    def write(self, record: Record, prediction: dict[str, Any]) -> None:
        names = self.names
        if self._csv is not None:
            assert isinstance(record.fields, list)
            scores = [prediction["scores"][label] for label in self.labels]
            self._csv.writerow(
                [*record.fields, prediction["label"], prediction["score"], *scores,
                 str(prediction["truncated"]).lower()]
            )  # fmt: skip
            return
        assert isinstance(record.fields, dict)
        row = {**record.fields, **{names[key]: prediction[key] for key in ADDED}}
        line = json.dumps(row, ensure_ascii=False)
        try:
            line.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a "\ud800" escape in another field: keep it escaped
            line = json.dumps(row)
        self.out.write(line + "\n")

    def close(self) -> None:
        """Flush; stdout stays open for whoever else writes to it."""
        try:
            self.out.flush()
        finally:
            if self.stdout:
                self.out.detach()
            else:
                self.out.close()


def open_output(path: Path | None) -> io.TextIOWrapper:
    """The output file (or stdout): UTF-8, undecodable input bytes written back as they were."""
    if path is None:
        return io.TextIOWrapper(
            sys.stdout.buffer, "utf-8", errors="surrogateescape", newline="", write_through=False
        )
    return open(path, "w", encoding="utf-8", errors="surrogateescape", newline="")
