"""python -m service.score --engine ray: the local engine's rows, order and bad-row reports,
errors found inside Ray tasks, a Ray the command starts itself (the extra missing: test_score)."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Ray on this machine alone stays on 127.0.0.1 (as the scorer keeps it: service/score_ray.py);
# read when Ray is first imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from service.score import ScoreConfig, ScoreError, Summary, score
from service.score_ray import READ_CPUS, plan_actors
from service.tables import TableError
from tests.service.tiny_bundle import build_bundle

pytestmark = pytest.mark.timeout(600)
REPO = Path(__file__).resolve().parents[2]
TEXTS = ["I love this game", "awful update, servers broken", "the movie is the best", "sad today"]


@pytest.fixture(scope="module")
def ray_here() -> Iterator[Any]:
    """A Ray on this machine for the module (as `--engine ray` starts one: the read's CPU on
    top of two actors'), shared by the runs: each joins it instead of starting its own."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2 + READ_CPUS, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level=logging.ERROR, log_to_driver=False)  # fmt: skip
    yield ray
    ray.shutdown()


def both_engines(config: ScoreConfig, tmp_path: Path) -> tuple[bytes, bytes, list[str], Summary]:
    """(local output, ray output, the messages of each run that differ, the ray summary)."""
    outputs, messages, summaries = [], [], []
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}{config.output.suffix if config.output else ''}"
        stderr, sys_stderr = io.StringIO(), sys.stderr
        sys.stderr = stderr
        try:
            summaries.append(score(ScoreConfig(**{**config.__dict__, "output": out, "engine": engine})))  # fmt: skip
        finally:
            sys.stderr = sys_stderr
        outputs.append(out.read_bytes())
        messages.append(stderr.getvalue().splitlines())
    return outputs[0], outputs[1], [m for m in messages[1] if m not in messages[0]], summaries[1]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_the_same_rows_in_the_same_order_as_the_local_engine(
    ray_here: Any, tmp_path: Path, fmt: str
) -> None:
    """Entities, bad rows of every kind named by file and line (row), 700 rows in chunks."""
    bundle = build_bundle(tmp_path / "pair", text_pair=True, max_length=8)
    rows: list[dict[str, Any]] = [
        {"id": i, "text": TEXTS[i % 4], "entity": ["game", "", "it", "movie"][i % 4]}
        for i in range(700)
    ]
    rows[3]["text"] = "   "  # empty
    rows[10]["entity"] = "x" * 101  # too long
    rows[20]["entity"] = "a b c d e f g"  # leaves the text no room (max_length 8)
    source = tmp_path / f"in.{fmt}"
    if fmt == "csv":
        with open(source, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["id", "text", "entity"])
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "jsonl":
        lines = [json.dumps(row) for row in rows]
        lines[30] = "not json"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), source, row_group_size=100)
    config = ScoreConfig(source, tmp_path / f"out.{fmt}", entity_col="entity", model=str(bundle))  # fmt: skip
    local, distributed, differing, summary = both_engines(config, tmp_path)
    assert local == distributed
    assert differing == [], differing
    skipped = 4 if fmt == "jsonl" else 3
    assert summary.rows == 700 - skipped and sum(summary.skipped.values()) == skipped
    assert sum(summary.nodes.values()) == summary.rows and summary.startup_s is not None


@pytest.mark.slow
def test_a_bad_file_found_by_a_read_task_is_one_line(
    ray_here: Any, tmp_path: Path, tiny_bundle: Path
) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "a.csv").write_text("text\ngood\n", encoding="utf-8")
    (folder / "b.csv").write_text('text\nok\n"' + "x" * 200_000 + '"\n', encoding="utf-8")
    config = ScoreConfig(folder, tmp_path / "out.csv", model=str(tiny_bundle), engine="ray")
    with pytest.raises(TableError) as raised:
        score(config)
    assert str(raised.value).startswith(f"{folder / 'b.csv'}:3: not valid CSV")
    assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_the_command_starts_its_own_ray(tmp_path: Path, tiny_bundle: Path) -> None:
    """No RAY_ADDRESS: a Ray started here for the run (and stopped after it)."""
    source = tmp_path / "in.csv"
    with open(source, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["id", "text"], *[[i, TEXTS[i % 4]] for i in range(600)]])
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, "-m", "service.score", str(source), "-o", str(tmp_path / "out.csv"),
               "--model", str(tiny_bundle), "--engine", "ray"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as handle:
        assert [row["id"] for row in csv.DictReader(handle)] == [str(i) for i in range(600)]
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith("scored 600 rows, skipped 0 in ") and "start-up" in summary, summary
    assert "rows per node: " in summary and "Traceback" not in done.stderr


def test_actors_follow_the_cpus_and_leave_one_to_the_read() -> None:
    assert plan_actors(3, threads=1) == 2  # two cores, and the read's logical CPU
    assert plan_actors(17, threads=2) == 8
    assert plan_actors(17, threads=2, actors=3) == 3
    with pytest.raises(ScoreError, match="one for reading and 2 per actor"):
        plan_actors(2, threads=2)
