"""service.tables: streaming CSV/TSV/JSONL records with line numbers, and the writer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from service.tables import Reader, Record, TableError, Writer, detect_format

PREDICTION = {"label": "Positive", "score": 0.9, "scores": {"Negative": 0.1, "Positive": 0.9}}
PREDICTION |= {"truncated": False}


def records(path: Path, text: str = "text", entity: str | None = None, header: bool = True) -> list[Record]:  # fmt: skip
    reader = Reader(path, detect_format(path, None), text, entity, header)
    try:
        return list(reader)
    finally:
        reader.close()


def test_csv_records_carry_their_first_line(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,text\n1,"two\nlines"\n\n2,plain\n3\n', encoding="utf-8")
    got = records(path)
    assert [(r.line, r.text) for r in got] == [(2, "two\nlines"), (5, "plain"), (6, None)]
    assert got[0].fields == ["1", "two\nlines"]


def test_tsv_and_columns_by_number_without_a_header(tmp_path: Path) -> None:
    path = tmp_path / "in.tsv"
    path.write_text("a\tXbox\tI love it\nb\tPS5\tawful\n", encoding="utf-8")
    got = records(path, text="2", entity="1", header=False)
    assert [(r.line, r.text, r.entity) for r in got] == [(1, "I love it", "Xbox"), (2, "awful", "PS5")]  # fmt: skip
    with pytest.raises(TableError, match="without a header, columns are numbers"):
        records(path, text="text", header=False)


def test_a_missing_column_names_the_file_and_the_header(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,tweet\n1,hello\n", encoding="utf-8")
    with pytest.raises(TableError) as info:
        records(path)
    assert str(info.value) == f"{path}:1: no column 'text' (--text-col); the header has: id, tweet"


def test_a_broken_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("text\nok\n" + '"' + "x" * 200_000 + '"\n', encoding="utf-8")
    with pytest.raises(TableError, match=rf"^{path}:3: not valid CSV"):
        records(path)


def test_jsonl_keeps_bad_lines_for_the_scorer(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "hi", "e": "X"}\n\n{not json}\n[1]\n{"other": 1}\n')
    got = records(path, entity="e")
    assert [r.line for r in got] == [1, 3, 4, 5]
    assert (got[0].text, got[0].entity) == ("hi", "X")
    assert isinstance(got[1].text, ValueError) and got[2].text == [1] and got[3].text is None


def test_undecodable_bytes_are_kept_and_written_back(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"note,text\ncaf\xe9,good\n")
    (record,) = records(path)
    buffer = io.BytesIO()
    out = io.TextIOWrapper(buffer, "utf-8", errors="surrogateescape", newline="")
    writer = Writer(out, "csv", ["Negative", "Positive"])
    writer.start(["note", "text"])
    writer.write(record, PREDICTION)
    out.flush()
    assert buffer.getvalue().splitlines()[1].startswith(b"caf\xe9,good,Positive,0.9,0.1,0.9,false")


def test_added_columns_get_a_prefix_when_the_input_has_them() -> None:
    out = io.StringIO()
    writer = Writer(out, "csv", ["Negative", "Positive"])
    writer.start(["text", "label"])
    assert out.getvalue().strip() == (
        "text,label,predicted_label,predicted_score,predicted_score_Negative,"
        "predicted_score_Positive,predicted_truncated"
    )
    out = io.StringIO()
    jsonl = Writer(out, "jsonl", ["Negative", "Positive"])
    jsonl.start(None)
    jsonl.write(Record(1, {"text": "a"}, "a", None), PREDICTION)
    assert json.loads(out.getvalue()) == {"text": "a", **PREDICTION}


def test_formats_by_suffix_or_flag(tmp_path: Path) -> None:
    assert detect_format(Path("a.CSV"), None) == "csv"
    assert detect_format(Path("a.ndjson"), None) == "jsonl"
    assert detect_format(Path("a.txt"), "tsv") == "tsv"
    with pytest.raises(TableError, match="unknown format"):
        detect_format(Path("a.txt"), None)


def test_jsonl_keeps_lone_surrogate_escapes_of_other_fields(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "good", "note": "x \\ud800 y"}\n')
    (record,) = records(path)
    buffer = io.BytesIO()
    out = io.TextIOWrapper(buffer, "utf-8", errors="surrogateescape", newline="")
    Writer(out, "jsonl", ["Negative", "Positive"]).write(record, PREDICTION)
    out.flush()
    assert json.loads(buffer.getvalue())["note"] == "x \ud800 y"
