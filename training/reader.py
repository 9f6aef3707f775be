"""One reader for every source spec (CSV, TSV, JSONL).

Bad input is either an error that names the file, line and column (a missing column, an unknown
label, undecodable bytes, broken JSON) or a counted skip (empty text, a label the spec drops):
never a traceback, never a silent drop.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from training.data import Row
from training.sources import Source, SourceReport

_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\([\"\\/])")


class DataError(ValueError):
    """A data file the spec cannot read; the message is one line: `file:line: what`."""


def _json_escapes(text: str) -> str:
    return _JSON_ESCAPE.sub(lambda m: chr(int(m[1], 16)) if m[1] else m[2], text)


def _wrapping_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1].replace('""', '"').strip()
    return text


CLEANERS: dict[str, Callable[[str], str]] = {
    "json_escapes": _json_escapes,
    "html": html.unescape,
    "wrapping_quotes": _wrapping_quotes,
}


def normalise(text: str) -> str:
    """The key that finds copies across sources: lowercase, stripped, whitespace collapsed."""
    return " ".join(text.lower().split())


def read_source_file(spec: Source, path: Path) -> tuple[list[Row], SourceReport]:
    """Rows of one file, labels mapped onto the model's classes; see the module doc for errors."""
    report = SourceReport(path=str(path))
    unknown_cleaners = [c for c in spec.clean if c not in CLEANERS]
    if unknown_cleaners:
        raise DataError(
            f"{path}: unknown clean step(s) {unknown_cleaners}; known: {list(CLEANERS)}"
        )
    cleaners = [CLEANERS[c] for c in spec.clean]
    rows: list[Row] = []
    for line, record in _records(spec, path, _decode(spec, path)):
        report.rows_read += 1
        raw_label = _field(record, spec.label_col, path, line).strip()
        text = _field(record, spec.text_col, path, line)
        for clean in cleaners:
            text = clean(text)
        text = text.strip()
        if raw_label in spec.drop_labels:
            report.drop(f"label {raw_label!r}")
            continue
        if raw_label not in spec.label_map:
            raise DataError(
                f"{path}:{line}: column {spec.label_col!r}: unknown label {raw_label!r} "
                f"(mapped: {sorted(spec.label_map)}; dropped: {list(spec.drop_labels)})"
            )
        if not text:
            report.drop("empty text")
            continue
        key = _field(record, spec.id_col, path, line).strip() if spec.id_col else ""
        entity = _field(record, spec.entity_col, path, line).strip() if spec.entity_col else ""
        rows.append(
            Row(
                tweet_id=key or normalise(text),
                entity=entity,
                label=spec.label_map[raw_label],
                text=text,
                source=spec.name,
            )
        )
    report.rows_kept = len(rows)
    return rows, report


def _decode(spec: Source, path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return data.decode(spec.encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"{path}:{line}: column {column}: bytes {data[exc.start : exc.end]!r} are not "
            f"{spec.encoding} (set the spec's encoding)"
        ) from exc
    except LookupError as exc:
        raise DataError(f"{path}: unknown encoding {spec.encoding!r}") from exc


def _records(spec: Source, path: Path, text: str) -> Iterator[tuple[int, dict[str, str]]]:
    if spec.format == "jsonl":
        yield from _jsonl(path, text)
        return
    reader = csv.DictReader(
        io.StringIO(text, newline=""), delimiter="," if spec.format == "csv" else "\t"
    )
    header = reader.fieldnames or []
    needed = [c for c in (spec.text_col, spec.label_col, spec.id_col, spec.entity_col) if c]
    for column in needed:
        if column not in header:
            raise DataError(f"{path}:1: no column {column!r} in the header (columns: {header})")
    start = reader.line_num + 1
    try:
        for record in reader:
            yield start, record
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: {exc}") from exc


def _jsonl(path: Path, text: str) -> Iterator[tuple[int, dict[str, str]]]:
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{line}: column {exc.colno}: invalid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line}: expected a JSON object per line")
        yield line, {k: "" if v is None else str(v) for k, v in record.items()}


def _field(record: dict[str, str], column: str | None, path: Path, line: int) -> str:
    value = record.get(column) if column else None
    if value is None:
        raise DataError(f"{path}:{line}: column {column!r} is missing in this row")
    return value
