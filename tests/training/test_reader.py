"""The one reader: every format, each bad input named by file, line and column, or counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.reader import DataError, read_source_file
from training.sources import SOURCES, SpecError, spec_from_toml, user_source

DATA_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def csv_source(path: Path, **extra: object) -> object:
    return user_source(path, text_col="text", label_col="label", **extra)


def test_user_csv_maps_labels_any_case_and_counts_skips(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text('label,text\npositive,"Great,  ""REALLY"""\nNEGATIVE,bad\nneutral,   \n')
    spec = user_source(path, text_col="text", label_col="label", label_map={
        "positive": "Positive", "NEGATIVE": "Negative", "neutral": "Neutral"})  # fmt: skip
    rows, report = read_source_file(spec, path)
    assert [(r.label, r.text) for r in rows] == [
        ("Positive", 'Great,  "REALLY"'),
        ("Negative", "bad"),
    ]
    assert report.rows_read == 3 and report.rows_kept == 2
    assert report.dropped == {"empty text": 1}
    # no id column: the key is the text lower-cased, whitespace collapsed
    assert [r.tweet_id for r in rows] == ['great, "really"', "bad"]


def test_tsv_and_jsonl_read_the_same_rows(tmp_path: Path) -> None:
    tsv = tmp_path / "a.tsv"
    tsv.write_text("id\tlabel\ttext\n7\tpositive\tnice one\n8\tnegative\tnot nice\n")
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"id": 7, "label": "positive", "text": "nice one"}\n\n'
                     '{"id": 8, "label": "negative", "text": "not nice"}\n')  # fmt: skip
    got = []
    for path in (tsv, jsonl):
        spec = user_source(path, text_col="text", label_col="label", id_col="id")
        rows, _ = read_source_file(spec, path)
        got.append([(r.tweet_id, r.label, r.text) for r in rows])
    assert got[0] == got[1] == [("7", "Positive", "nice one"), ("8", "Negative", "not nice")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("label,body\npositive,x\n", "mine.csv:1: no column 'text' in the header"),
        ("label,text\npositive,ok\nsarcastic,hmm\n", "mine.csv:3: column 'label': unknown label 'sarcastic'"),
        ('label,text\npositive,"multi\nline"\nweird,x\n', "mine.csv:4: column 'label': unknown label 'weird'"),
        ("label,text\npositive\n", "mine.csv:2: column 'text' is missing in this row"),
    ],
)  # fmt: skip
def test_bad_csv_names_file_line_and_column(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_source_file(csv_source(path), path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_undecodable_bytes_name_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_bytes(b"label,text\npositive,fine\nnegative,caf\xe9 bad\n")
    with pytest.raises(DataError, match=r"mine.csv:3: column 13: bytes b'\\xe9' are not utf-8"):
        read_source_file(csv_source(path), path)
    rows, _ = read_source_file(csv_source(path, encoding="cp1252"), path)
    assert rows[1].text == "café bad"


def test_broken_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"label": "positive", "text": "ok"}\n{"label": "positive", "text": }\n')
    with pytest.raises(DataError, match=r"a.jsonl:2: column \d+: invalid JSON"):
        read_source_file(csv_source(path), path)


def test_semeval_artefacts_are_repaired(tmp_path: Path) -> None:
    spec = SOURCES["semeval2017"]
    path = tmp_path / "s.csv"
    path.write_text('tweet_id,label,text\n1,neutral,"""I\\u2019m here\\u002c &amp; you"""\n')
    rows, _ = read_source_file(spec, path)
    assert rows[0].text == "I\u2019m here, & you"


def test_toml_spec_reads_a_file_beside_it(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("stars,review\n1,bad\n5,good\n0,??\n")
    (tmp_path / "mine.toml").write_text(
        'train_files = ["d.csv"]\ntext_col = "review"\nlabel_col = "stars"\n'
        'drop_labels = ["0"]\n[label_map]\n1 = "Negative"\n5 = "Positive"\n'
    )
    spec = spec_from_toml(tmp_path / "mine.toml")
    rows, report = read_source_file(spec, spec.paths(Path("/elsewhere"), spec.train_files)[0])
    assert [(r.label, r.text, r.source) for r in rows] == [
        ("Negative", "bad", "mine"), ("Positive", "good", "mine")]  # fmt: skip
    assert report.dropped == {"label '0'": 1}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('train_files = ["d.csv"]\ntext_col = "t"\nlabel_col = "l"\ncolour = 1\n', "unknown spec key"),
        ('train_files = ["d.csv"]\ntext_col = "t"\n', "missing ['label_col']"),
        ('train_files = ["d.csv"]\ntext_col = "t"\nlabel_col = "l"\n[label_map]\nx = "Happy"\n', "label_map targets"),
        ("train_files = [\n", "mine.toml"),
    ],
)  # fmt: skip
def test_bad_specs_are_refused(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "mine.toml").write_text(toml)
    with pytest.raises(SpecError, match=message.replace("[", r"\[")):
        spec_from_toml(tmp_path / "mine.toml")


def test_every_source_spec_reads_its_real_file_header() -> None:
    """The specs' columns are the real files' (checked on the fixture writer's copies of them)."""
    from tests.training.source_fixtures import HEADERS

    for name, spec in SOURCES.items():
        for column in (spec.text_col, spec.label_col, spec.id_col, spec.entity_col):
            assert column is None or column in HEADERS[name], (name, column)


@pytest.mark.skipif(not (DATA_ROOT / "README.md").is_file(), reason="shared data absent")
def test_fixture_headers_are_the_real_files_headers() -> None:
    """The fixture writer's headers (tests/training/source_fixtures.py) are the real ones, and
    every spec'd source reads its real files without an error."""
    import csv

    from tests.training.source_fixtures import HEADERS

    for name, spec in SOURCES.items():
        for path in spec.paths(DATA_ROOT, spec.train_files + spec.test_files):
            with open(path, newline="", encoding=spec.encoding) as handle:
                assert next(csv.reader(handle)) == HEADERS[name], path
            rows, report = read_source_file(spec, path)
            assert rows and report.rows_kept == len(rows)
