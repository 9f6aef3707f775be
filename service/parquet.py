"""Parquet in and out for the offline scorer, beside `service.tables`' text formats: the same
`Record`s in (a row's index for its line), the same added columns out, a batch of rows at a
time. pyarrow is an optional extra (`pip install .[parquet]`, or `.[ray]`): imported here only,
and only when a Parquet file is read or written.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from service.tables import ADDED, Record, TableError, Writer, flat_names, prediction_names

PARQUET_ROWS = 1024  # rows per Parquet batch read or written (memory stays a few batches)
NEEDS_PYARROW = "Parquet needs pyarrow: pip install .[parquet] (or .[ray])"


def pyarrow_parquet() -> Any:
    """`pyarrow.parquet`, or a one-line error naming the extra that brings it."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise TableError(NEEDS_PYARROW) from None
    return pq


class ParquetReader:
    """Records of one Parquet file, a batch of rows at a time: `fields` is the row as a dict
    (the writer turns it back into the file's types), `line` its index in the file."""

    def __init__(self, path: Path, text_col: str, entity_col: str | None) -> None:
        pq = pyarrow_parquet()
        self.path, self.name = path, str(path)
        self.text_col, self.entity_col = text_col, entity_col
        self.size = path.stat().st_size
        try:
            self._file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
            raise TableError(f"{path}: not a readable Parquet file: {exc}") from None
        self.schema = self._file.schema_arrow
        self.columns: list[str] | None = list(self.schema.names)
        for column, flag in ((text_col, "--text-col"), (entity_col, "--entity-col")):
            if column is not None and column not in self.columns:
                shown = ", ".join(self.columns)
                raise TableError(f"{path}: no column {column!r} ({flag}); the file has: {shown}")  # fmt: skip
        self._rows: int = max(1, self._file.metadata.num_rows)
        self._done = 0

    @property
    def bytes_read(self) -> int:
        return self.size * self._done // self._rows

    def close(self) -> None:
        self._file.close()

    def __iter__(self) -> Iterator[Record]:
        line = 0
        try:
            for batch in self._file.iter_batches(PARQUET_ROWS):
                for row in batch.to_pylist():
                    entity = None if self.entity_col is None else row[self.entity_col]
                    yield Record(line, row, row[self.text_col], entity, self.name, row=True)
                    line += 1
                self._done = line
        except OSError as exc:  # a corrupt page: the file, and where the reading stopped
            raise TableError(f"{self.path}: row {line}: unreadable Parquet data: {exc}") from None  # fmt: skip


class ParquetWriter(Writer):
    """Parquet out: the input's columns with their types (a CSV's as strings), then the added
    ones (label: string, score and score_<label>: double, truncated: bool), written a batch of
    rows at a time."""

    def __init__(self, path: Path, labels: Sequence[str]) -> None:
        self.path, self.labels = path, tuple(labels)
        self.pa = pyarrow_parquet()
        self.names = dict(zip(ADDED, ADDED, strict=True))
        self._rows: list[dict[str, Any]] = []
        self._file: Any = None
        self.columns: list[str] = []

    def start(self, columns: Sequence[str] | None, schema: Any = None) -> None:
        import pyarrow as pa

        self.names = prediction_names(columns, self.labels)
        self.columns = list(columns or ())
        if schema is None:  # CSV/TSV: every cell a string
            schema = pa.schema([(name, pa.string()) for name in self.columns])
        types = [pa.string(), pa.float64(), *[pa.float64()] * len(self.labels), pa.bool_()]
        added = list(zip(flat_names(self.names, self.labels), types, strict=True))
        self.schema = pa.schema([*schema, *[pa.field(n, t) for n, t in added]])
        self._file = self.pa.ParquetWriter(self.path, self.schema)

    def write(self, record: Record, prediction: dict[str, Any]) -> None:
        fields = record.fields
        if isinstance(fields, list):
            if len(fields) > len(self.columns):
                raise TableError(f"{record.where()}: {len(fields)} cells, the header has {len(self.columns)}: a Parquet row has one value per column")  # fmt: skip
            fields = dict(zip(self.columns, fields, strict=False))  # missing cells: null
        scores = [prediction["scores"][label] for label in self.labels]
        values = [prediction["label"], prediction["score"], *scores, prediction["truncated"]]
        added = dict(zip(flat_names(self.names, self.labels), values, strict=True))
        self._rows.append({**fields, **added})
        if len(self._rows) >= PARQUET_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            import pyarrow as pa

            self._file.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows = []

    def close(self) -> None:
        if self._file is None:
            return
        try:
            self._flush()
        finally:
            self._file.close()
