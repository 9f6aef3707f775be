"""Row-by-row readers and writers for the offline scorer: CSV, TSV and JSONL.

Streams: one record at a time in, one out, so memory does not grow with the file. Every record
keeps its line number (the first physical line of a CSV record) so a bad row can be named.
Bytes that are not UTF-8 are kept (surrogateescape) and written back unchanged; the scorer
refuses them only in the column it must read.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

Format = Literal["csv", "tsv", "jsonl"]
SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
DELIMITERS = {"csv": ",", "tsv": "\t"}
ADDED = ("label", "score", "scores", "truncated")


class TableError(Exception):
    """The file cannot be read as its format says (the message names the file and line)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One input row: its line, its fields as read, and the cells the scorer needs (None:
    absent; a non-string JSON value is kept as is so the scorer can name it)."""

    line: int
    fields: list[str] | dict[str, Any]
    text: Any
    entity: Any


def detect_format(path: Path, given: str | None) -> Format:
    if given is not None:
        return SUFFIXES["." + given]
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise TableError(f"{path}: unknown format {suffix or '(no suffix)'!r}; use --format")
    return SUFFIXES[suffix]


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


class Reader:
    """Records of one file; `columns` (CSV/TSV with a header) and `bytes_read` for progress."""

    def __init__(
        self, path: Path, fmt: Format, text_col: str, entity_col: str | None, header: bool
    ) -> None:
        self.path, self.fmt = path, fmt
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
                yield Record(line, row, text, entity)
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
                yield Record(line, {}, value, None)  # the scorer reports it
                continue
            yield Record(line, value, value.get(self.text_col), self._entity(value))

    def _entity(self, value: dict[str, Any]) -> Any:
        return None if self.entity_col is None else value.get(self.entity_col)


class Writer:
    """The input's records with the prediction added, in the input's format."""

    def __init__(self, out: IO[str], fmt: Format, labels: Sequence[str]) -> None:
        self.out, self.fmt, self.labels = out, fmt, tuple(labels)
        self._csv = None if fmt == "jsonl" else csv.writer(out, delimiter=DELIMITERS[fmt], lineterminator="\n")  # fmt: skip
        self.names = dict(zip(ADDED, ADDED, strict=True))

    def start(self, columns: Sequence[str] | None) -> None:
        """The header (CSV/TSV with one); added names get a prefix if the input has them."""
        taken = set(columns or ())
        csv_added = {"label", "score", "truncated"} | {f"score_{label}" for label in self.labels}
        if taken & (set(ADDED) | csv_added):
            self.names = {name: f"predicted_{name}" for name in ADDED}
        if self._csv is not None and columns is not None:
            self._csv.writerow([*columns, *self._csv_names()])

    def _csv_names(self) -> list[str]:
        score = self.names["score"]
        per_label = [f"{score}_{label}" for label in self.labels]
        return [self.names["label"], score, *per_label, self.names["truncated"]]

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


def open_output(path: Path | None) -> io.TextIOWrapper:
    """The output file (or stdout): UTF-8, undecodable input bytes written back as they were."""
    if path is None:
        return io.TextIOWrapper(
            sys.stdout.buffer, "utf-8", errors="surrogateescape", newline="", write_through=False
        )
    return open(path, "w", encoding="utf-8", errors="surrogateescape", newline="")
