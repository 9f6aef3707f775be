"""python -m service.score: every format, bad rows, the API's answers, flat memory."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from service import Settings, create_app
from service import score as score_module
from service.score import Progress, ScoreConfig, ScoreError, main, resolve_bundle, score
from service.tables import Reader, TableError
from tests.service.tiny_bundle import build_bundle

pytestmark = pytest.mark.timeout(600)
REPO = Path(__file__).resolve().parents[2]
TEXTS = ["I love this game", "awful update, servers broken", "the movie is the best", "sad today"]
ADDED = ("label", "score", "scores", "truncated")


def api_answers(bundle: Path, texts: list[str], entities: list[str] | None = None) -> list[Any]:
    """What the HTTP API says for each text sent alone (the predictions, without `model`)."""
    settings = Settings(bundle=bundle, threads=1, access_log=False, warmup=False)
    answers = []
    with TestClient(create_app(settings)) as client:
        for i, text in enumerate(texts):
            body = {"text": text} | ({"entity": entities[i]} if entities and entities[i] else {})
            answer = client.post("/predict", json=body).json()
            answers.append({key: answer[key] for key in ADDED})
    return answers


def run(config: ScoreConfig) -> tuple[Any, str]:
    """Score into config.output and return (summary, progress/messages on stderr)."""
    stderr = io.StringIO()
    sys_stderr, sys.stderr = sys.stderr, stderr
    try:
        summary = score(config)
    finally:
        sys.stderr = sys_stderr
    return summary, stderr.getvalue()


def csv_rows(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def from_csv(row: dict[str, str], labels: list[str]) -> dict[str, Any]:
    scores = {label: float(row[f"score_{label}"]) for label in labels}
    return {"label": row["label"], "score": float(row["score"]), "scores": scores,
            "truncated": row["truncated"] == "true"}  # fmt: skip


@pytest.mark.parametrize("coupled", [True, False])
def test_csv_out_equals_the_api(tmp_path: Path, coupled: bool) -> None:
    """Coupled: the bundle's answers depend on batch-mates, so both run one text per run and
    agree exactly; otherwise the scorer batches as the service does (within its tolerance)."""
    bundle = build_bundle(tmp_path / "m", coupled=coupled)
    source = tmp_path / "in.csv"
    with open(source, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["id", "text"], *[[i, t] for i, t in enumerate(TEXTS * 5)]])
    summary, _ = run(ScoreConfig(source, tmp_path / "out.csv", model=str(bundle)))
    out = csv_rows(tmp_path / "out.csv")
    assert [row["id"] for row in out] == [str(i) for i in range(20)]  # same rows, same order
    assert [row["text"] for row in out] == TEXTS * 5
    got = [from_csv(row, ["Negative", "Positive"]) for row in out]
    expected = api_answers(bundle, TEXTS * 5)
    if coupled:
        assert got == expected
    else:
        assert [g["label"] for g in got] == [e["label"] for e in expected]
        for g, e in zip(got, expected, strict=True):
            assert g["scores"] == pytest.approx(e["scores"], abs=1e-4)
    assert summary.rows == 20 and not summary.skipped
    assert sum(summary.labels.values()) == 20


def test_jsonl_with_entities_equals_the_api(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path / "pair", text_pair=True, coupled=True, model_name="pair")
    entities = ["game", "", "movie", "it"]
    source = tmp_path / "in.jsonl"
    lines = [
        {"id": i, "tweet": t, "about": e}
        for i, (t, e) in enumerate(zip(TEXTS, entities, strict=True))
    ]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    config = ScoreConfig(source, tmp_path / "out.jsonl", text_col="tweet", entity_col="about",
                         model=str(bundle))  # fmt: skip
    run(config)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [{k: row[k] for k in ("id", "tweet", "about")} for row in out] == lines
    assert [{k: row[k] for k in ADDED} for row in out] == api_answers(bundle, TEXTS, entities)


def test_tsv_without_header(tmp_path: Path, tiny_bundle: Path) -> None:
    source = tmp_path / "in.tsv"
    source.write_text("".join(f"{i}\t{t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    run(ScoreConfig(source, tmp_path / "out.tsv", text_col="1", header=False, model=str(tiny_bundle)))  # fmt: skip
    with open(tmp_path / "out.tsv", newline="", encoding="utf-8") as handle:
        out = list(csv.reader(handle, delimiter="\t"))
    assert [row[:2] for row in out] == [[str(i), t] for i, t in enumerate(TEXTS)]
    assert [row[2] for row in out] == [a["label"] for a in api_answers(tiny_bundle, TEXTS)]


def test_bad_rows_are_reported_with_their_line_and_skipped(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path / "pair", text_pair=True, max_length=8)
    source = tmp_path / "in.csv"
    source.write_bytes(
        b"text,entity\n"
        b"I love this game,Xbox\n"  # 2: fine
        b",Xbox\n"  # 3: empty text
        b"   ,Xbox\n"  # 4: whitespace only
        b"caf\xe9 is good,Xbox\n"  # 5: not UTF-8
        b"good," + b"x" * 101 + b"\n"  # 6: entity over 100 characters
        b"good,a b c d e f g\n"  # 7: the entity leaves the text no room (max_length 8)
        b"only one cell\n"  # 8: the entity cell is missing: no entity, fine
        b'"multi\nline",it\n'  # 9-10: fine
        b"awful,\n"  # 11: fine (an empty entity cell: no entity)
    )
    summary, stderr = run(ScoreConfig(source, tmp_path / "out.csv", entity_col="entity", model=str(bundle)))  # fmt: skip
    lines = stderr.splitlines()
    assert lines == [
        f"{source}:3: empty text; row skipped",
        f"{source}:4: empty text; row skipped",
        f"{source}:5: undecodable bytes (not UTF-8); row skipped",
        f"{source}:6: entity longer than 100 characters; row skipped",
        f"{source}:7: an entity leaves no room for its text within 8 tokens; row skipped",
    ]
    assert [row["text"] for row in csv_rows(tmp_path / "out.csv")] == [
        "I love this game", "only one cell", "multi\nline", "awful"
    ]  # fmt: skip
    assert summary.rows == 4 and sum(summary.skipped.values()) == 5
    assert summary.skipped["empty text"] == 2
    assert "scored 4 rows, skipped 5 (empty text 2" in summary.line()


def test_bad_jsonl_lines_are_reported(tmp_path: Path, tiny_bundle: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"text": "good"}\n{"text": 3}\nnot json\n{"id": 1}\n{"text": "bad"}\n')
    summary, stderr = run(ScoreConfig(source, tmp_path / "out.jsonl", model=str(tiny_bundle)))
    assert [line.split(": ")[0] for line in stderr.splitlines()] == [
        f"{source}:2", f"{source}:3", f"{source}:4"
    ]  # fmt: skip
    assert "text is not a string (int)" in stderr and "no text" in stderr
    assert summary.rows == 2


def test_memory_stays_flat_on_a_large_file(tmp_path: Path, tiny_bundle: Path) -> None:
    """200k rows: a reader that kept its rows would hold tens of MB of Python objects."""
    source = tmp_path / "big.csv"
    with open(source, "w", encoding="utf-8") as handle:
        handle.write("id,text\n")
        handle.writelines(f"{i},good day {i % 97}\n" for i in range(200_000))
    config = ScoreConfig(source, tmp_path / "out.csv", model=str(tiny_bundle), progress=False)
    tracemalloc.start()
    try:
        summary, _ = run(config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.rows == 200_000
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    tracemalloc.start()  # the control: what holding the rows would cost
    with open(source, encoding="utf-8") as handle:
        kept = [line.split(",") for line in handle]
    _, holding = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert holding > 8 * 2**20 and len(kept) == 200_001


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("text\na\n", encoding="utf-8")
    reader = Reader(path, "csv", "text", None, True)
    quiet, loud = io.StringIO(), io.StringIO()
    Progress(reader, None, quiet).update(10)  # StringIO is not a terminal
    shown = Progress(reader, True, loud)
    shown.last -= 1
    shown.update(10)
    shown.done()
    reader.close()
    assert quiet.getvalue() == ""
    assert "10 rows" in loud.getvalue() and "rows/s" in loud.getvalue() and "ETA" in loud.getvalue()


def test_a_model_by_name_under_models(tmp_path: Path) -> None:
    build_bundle(tmp_path / "models" / "folder-a", model_name="alpha")
    assert resolve_bundle("alpha", tmp_path / "models") == (tmp_path / "models" / "folder-a", None)
    assert resolve_bundle("folder-a", tmp_path / "models") == (
        tmp_path / "models" / "folder-a",
        None,
    )
    with pytest.raises(ScoreError, match=r"'beta': not a bundle folder.*\(alpha\)"):
        resolve_bundle("beta", tmp_path / "models")


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "{path}: no such file"),
        (
            "id,tweet\n1,hi\n",
            [],
            "{path}:1: no column 'text' (--text-col); the header has: id, tweet",
        ),
        ('text\nok\n"' + "x" * 200_000 + '"\n', [], "{path}:3: not valid CSV"),
        ("text\nok\n", ["--entity-col", "e"], "--entity-col: model 'tiny-test' reads no entity"),
    ],
)
def test_a_bad_file_or_column_is_one_line_without_traceback(
    tmp_path: Path,
    tiny_bundle: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    args: list[str],
    message: str,
) -> None:
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    status = main([str(path), "-o", str(tmp_path / "out.csv"), "--model", str(tiny_bundle), *args])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("score: error: " + message.format(path=path)), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_the_command_line_end_to_end(tmp_path: Path, tiny_bundle: Path) -> None:
    """`python -m service.score` piped: rows on stdout, no progress bar, a summary on stderr."""
    source = tmp_path / "in.csv"
    with open(source, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text"], *[[text] for text in TEXTS]])
    command = [sys.executable, "-m", "service.score", str(source), "--model", str(tiny_bundle)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [row["text"] for row in csv.DictReader(io.StringIO(done.stdout))] == TEXTS
    assert "\r" not in done.stderr and "ETA" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("scored 4 rows, skipped 0 in ")


def test_every_core_gets_a_run_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(score_module, "available_cpus", lambda: 8)  # known, on any machine
    assert ScoreConfig(Path("x.csv")).pool == 8
    assert ScoreConfig(Path("x.csv"), threads=2).pool == 4
    assert ScoreConfig(Path("x.csv"), threads=3).pool == 2  # rounded down
    assert ScoreConfig(Path("x.csv"), threads=16).pool == 1  # never zero
    assert ScoreConfig(Path("x.csv"), pool_size=3).pool == 3


def test_a_closed_pipe_ends_the_run_quietly(tmp_path: Path, tiny_bundle: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("text\n" + "good day\n" * 20_000, encoding="utf-8")
    command = f"{sys.executable} -m service.score {source} --model {tiny_bundle} | head -n 2"
    done = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.stdout.splitlines()[0].startswith("text,label,score")
    assert "Traceback" not in done.stderr and "error" not in done.stderr, done.stderr


# ------------------------------------------------------------- Parquet, folders and globs


def write_parquet(path: Path, rows: list[dict[str, Any]], group: int = 3) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.int64()), ("text", pa.string()), ("tags", pa.list_(pa.string()))])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=group)


def test_parquet_in_parquet_out_keeps_types_order_and_names_bad_rows(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts: list[Any] = [*TEXTS, None, "  ", *TEXTS]  # rows 4 (null) and 5 (blank) are bad
    rows = [{"id": i, "text": t, "tags": [str(i)] * (i % 3)} for i, t in enumerate(texts)]
    source = tmp_path / "in.parquet"
    write_parquet(source, rows)
    summary, stderr = run(ScoreConfig(source, tmp_path / "out.parquet", model=str(tiny_bundle)))
    assert stderr.splitlines() == [
        f"{source}: row 4: no text; row skipped",
        f"{source}: row 5: empty text; row skipped",
    ]
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.names == ["id", "text", "tags", "label", "score", "score_Negative",
                                "score_Positive", "truncated"]  # fmt: skip
    assert out.schema.field("id").type == pa.int64()
    assert out.schema.field("tags").type == pa.list_(pa.string())
    assert out.schema.field("truncated").type == pa.bool_()
    kept = [row for row in rows if row["id"] not in (4, 5)]
    assert out.select(["id", "text", "tags"]).to_pylist() == kept
    expected = api_answers(tiny_bundle, TEXTS * 2)
    assert out.column("label").to_pylist() == [e["label"] for e in expected]
    assert summary.rows == 8 and sum(summary.skipped.values()) == 2


def test_a_folder_or_a_glob_is_one_table(tmp_path: Path, tiny_bundle: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for name, part in (("a.csv", TEXTS[:2]), ("b.csv", TEXTS[2:])):
        with open(folder / name, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([["text"], *[[t] for t in part]])
    (folder / "notes.txt").write_text("not an input")
    for spec in (folder, f"{folder}/*.csv"):
        run(ScoreConfig(spec, tmp_path / "out.csv", model=str(tiny_bundle)))
        assert [row["text"] for row in csv_rows(tmp_path / "out.csv")] == TEXTS
    (folder / "c.csv").write_text("id,text\n1,good\n", encoding="utf-8")
    with pytest.raises(TableError, match=r"c\.csv: its columns differ from .*a\.csv's"):
        run(ScoreConfig(folder, tmp_path / "out.csv", model=str(tiny_bundle)))


def test_csv_to_parquet_and_the_outputs_a_run_cannot_write(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    source = tmp_path / "in.csv"
    source.write_text("id,text\n1,good day\n2\n3,bad day\n", encoding="utf-8")  # row 2: no text
    run(ScoreConfig(source, tmp_path / "out.parquet", model=str(tiny_bundle)))
    out = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [(r["id"], r["text"], r["label"]) for r in out] == [
        ("1", "good day", "Positive"), ("3", "bad day", "Negative")
    ]  # fmt: skip
    parquet = tmp_path / "in.parquet"
    write_parquet(parquet, [{"id": 1, "text": "good", "tags": []}])
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "good"}\n', encoding="utf-8")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text\ngood,extra\n", encoding="utf-8")
    for args, message in (
        ([str(parquet)], "Parquet output needs a file: --output FILE.parquet"),
        (
            [str(jsonl), "-o", str(tmp_path / "o.parquet")],
            f"{tmp_path / 'o.parquet'}: Parquet output reads CSV/TSV",
        ),
        (
            [str(ragged), "-o", str(tmp_path / "r.parquet")],
            f"{ragged}:2: 2 cells, the header has 1",
        ),
        ([f"{tmp_path}/none-*.csv"], f"{tmp_path}/none-*.csv: matches no file"),
    ):
        assert main([*args, "--model", str(tiny_bundle)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"score: error: {message}") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("missing", "suffix", "args", "message"),
    [
        (
            ("pyarrow", "pyarrow.parquet"),
            ".parquet",
            ["-o", "out.parquet"],
            "Parquet needs pyarrow: pip install .[parquet] (or .[ray])",
        ),
        (("ray",), ".csv", ["--engine", "ray"], "--engine ray needs Ray: pip install .[ray]"),
    ],
)
def test_a_missing_extra_is_one_line(
    tmp_path: Path,
    tiny_bundle: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    missing: tuple[str, ...],
    suffix: str,
    args: list[str],
    message: str,
) -> None:
    """Parquet without pyarrow, `--engine ray` without Ray: one line naming the extra."""
    source = tmp_path / f"in{suffix}"
    if suffix == ".parquet":
        write_parquet(source, [{"id": 1, "text": "good", "tags": []}])
    else:
        source.write_text("text\ngood\n", encoding="utf-8")
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)  # importing it now fails
    monkeypatch.chdir(tmp_path)
    assert main([str(source), "--model", str(tiny_bundle), *args]) == 2
    assert capsys.readouterr().err == f"score: error: {message}\n"
