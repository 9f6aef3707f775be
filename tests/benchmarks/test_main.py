"""`python -m benchmarks` end to end at tiny scale: the result files and their schema."""

import json
from pathlib import Path

import pytest

from benchmarks import pyspy
from benchmarks.__main__ import main
from benchmarks.cli import parse_args
from tests.benchmarks.test_texts import semeval_root


@pytest.mark.slow  # starts the service for every HTTP level
def test_quick_run_writes_json_markdown_and_plots(
    tiny_bundle: Path, tiny_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    code = main(
        [
            "--bundle",
            str(tiny_bundle),
            "--data",
            str(tiny_data),
            "--quick",
            "--skip-peers",
            "--levels",
            "1,2",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--out-dir",
            str(out),
            "--batches",
            "1,2",
            "--seq-lens",
            "8",
            "--fp32-model",
            str(tiny_bundle / "model.onnx"),
        ]
    )
    assert code == 0
    (json_path,) = out.glob("*-quick.json")
    results = json.loads(json_path.read_text())
    assert {
        "schema",
        "run_id",
        "machine",
        "bundle",
        "texts",
        "settings",
        "engine",
        "http",
        "targets",
        "elapsed_s",
    } <= set(results)
    assert (
        results["machine"]["logical_cores"] >= 1 and results["machine"]["versions"]["onnxruntime"]
    )
    assert results["texts"]["count"] == 4
    engine = results["engine"]
    assert {r["precision"] for r in engine["grid"]} == {"int8", "fp32"}
    assert len(engine["grid"]) == 2 * 2 * 1 * 1  # precisions x batches x lengths x threads
    assert engine["tokenizer"]["texts"] == 4 and engine["profile"]["ops"]
    assert next(t["name"] for t in results["targets"]).startswith("RPS at")
    names = [s["name"] for s in results["http"]["servers"]]
    assert names == ["ours", "ours, SENTIMENT_IDLE_THREADS=1"]  # the default --pair
    for server in results["http"]["servers"]:
        assert "skipped" not in server, server.get("skipped")
        assert [lvl["errors"] for lvl in server["levels"]] == [0, 0]
        for lvl in server["levels"]:  # two rounds each (--quick), every run on some path
            assert len(lvl["rounds"]) == 2 and sum(lvl["runs_by_path"].values()) >= lvl["ok"]
    variant = results["http"]["servers"][1]["levels"]
    assert all(lvl["runs_by_path"].get("alone", 0) == 0 for lvl in variant)  # no idle session
    assert all(lvl["ours_vs_this_by_round"]["rps_median"] > 0 for lvl in variant)
    pair_targets = [t for t in results["targets"] if "(in turns)" in t["name"]]
    assert [t["name"].split(" at ")[1] for t in pair_targets] == ["2 users (in turns)"]
    assert (
        "Ours beside **ours, SENTIMENT_IDLE_THREADS=1**" in json_path.with_suffix(".md").read_text()
    )
    if pyspy.binary() is not None:  # issue #23: the top level and one user, by stage
        ours = results["http"]["servers"][0]
        keys = ("py_spy_one_user", "py_spy", "py_spy_gil_one_user", "py_spy_gil")
        assert [ours[k]["level"] for k in keys] == [1, 2, 1, 2]
        heading = "### Core time per request by stage (µs), 1 and 2 users: ours"
        assert heading in json_path.with_suffix(".md").read_text()
    plans = engine["service_plan"]
    assert [p["max_batch"] for p in plans] == [1, 16] and all(p["texts_per_s"] > 0 for p in plans)
    after = engine["service_plan_after"]  # measured again once our HTTP levels were done
    assert after["max_batch"] == 1 and after["texts_per_s"] > 0
    assert results["workloads"]["runs"][0]["http_vs_engine"]["plan_readings"] == [
        plans[0]["texts_per_s"],
        after["texts_per_s"],
    ]
    limit = results["limit"]  # the tiny graph is fp32: no int8 GEMM, nothing of the rate used
    assert limit["int8_gemms"] == 0 and limit["fraction_of_gemm_rate"] == 0
    assert limit["gemm"]["best_gmacs_per_s"] > 0 and limit["texts_per_s"] > 0
    assert json_path.with_suffix(".md").read_text().startswith("# Benchmark ")
    assert (out / f"{results['run_id']}-throughput.png").is_file()
    (note,) = results["workloads"]["notes"]  # no SemEval file beside the data: a note, no stop
    assert note.startswith("semeval workload skipped: ")


@pytest.mark.slow  # starts the service for each workload
def test_both_workloads_get_the_engine_alone_and_our_http(
    pair_bundle: Path, tiny_data: Path, tmp_path: Path
) -> None:
    root = semeval_root(tmp_path)
    code = main([
        "--bundle", str(pair_bundle), "--data", str(tiny_data), "--data-root", str(root),
        "--quick", "--skip-peers", "--pair", "none", "--py-spy", "none", "--levels", "1",
        "--duration", "0.3", "--warmup", "0.1", "--batches", "1,2", "--seq-lens", "8",
        "--out-dir", str(tmp_path / "out"),
    ])  # fmt: skip
    assert code == 0
    (json_path,) = (tmp_path / "out").glob("*-quick.json")
    results = json.loads(json_path.read_text())
    entity, semeval = results["workloads"]["runs"]
    assert results["workloads"]["notes"] == [] and results["texts"] == {
        key: entity[key] for key in ("workload", "source", "count", "entities")
    }
    assert entity["workload"] == "twitter-entity" and entity["entities"] is True
    assert semeval["workload"] == "semeval" and semeval["entities"] is False
    assert semeval["count"] == 3 and "twitter-2017test-A.csv" in semeval["source"]
    assert [p["max_batch"] for p in semeval["engine"]["service_plan"]] == [1, 16]
    assert {r["batch"] for r in semeval["engine"]["real_texts"]} == {1, 2}
    (ours,) = semeval["http"]["servers"]
    assert ours["name"] == "ours" and [lvl["errors"] for lvl in ours["levels"]] == [0]
    assert "py_spy" not in ours  # a further workload: no profile, no pair, no peers
    for run in (entity, semeval):
        assert run["http_vs_engine"]["ratio"] > 0 and run["http_vs_engine"]["concurrency"] == 1
    text = json_path.with_suffix(".md").read_text()
    assert "## Workloads: HTTP ÷ engine alone" in text and "| semeval |" in text
    for part in (results, semeval):  # the floor: ours and the contract app, the bare app
        runs = part["floor"]["runs"]
        assert [run["name"] for run in runs] == [
            "ours, inference taken out",
            "contract app, inference taken out",
            "contract app, the model",
            "bare ASGI app, same uvicorn",
        ], part["floor"]["notes"]
        assert all(run["errors"] == 0 and run["cpu_us_per_request"] > 0 for run in runs)
    assert "## The floor under HTTP ÷ engine" in text


def test_no_workload_to_measure_is_an_error(tiny_bundle: Path, tmp_path: Path) -> None:
    argv = ["--bundle", str(tiny_bundle), "--workload", "semeval", "--data-root", str(tmp_path)]
    assert main([*argv, "--out-dir", str(tmp_path)]) == 2
    assert not list(tmp_path.glob("*.json"))


def test_missing_fp32_model_is_a_note_not_a_failure(tiny_bundle: Path, tmp_path: Path) -> None:
    code = main(
        [
            "--bundle",
            str(tiny_bundle),
            "--quick",
            "--skip-http",
            "--batches",
            "1",
            "--seq-lens",
            "8",
            "--fp32-model",
            str(tmp_path / "absent.onnx"),
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    (json_path,) = tmp_path.glob("*.json")
    engine = json.loads(json_path.read_text())["engine"]
    assert {r["precision"] for r in engine["grid"]} == {"int8"}
    assert "fp32 column skipped" in engine["notes"][0]


@pytest.mark.parametrize(
    "bad",
    [
        ["--levels", "0"],
        ["--levels", "a,b"],
        ["--service-env", "X"],
        ["--pair", "X"],
        ["--workload", "tweets"],
    ],
)
def test_bad_flags_are_rejected(bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--bundle", "b", *bad])


def test_both_workloads_by_default_quick_or_not() -> None:
    assert parse_args(["--bundle", "b"]).workload == "both"
    assert parse_args(["--bundle", "b", "--quick"]).workload == "both"


def test_cpu_ids_accept_zero_and_reject_negatives() -> None:
    assert parse_args(["--bundle", "b", "--server-cpus", "0,1"]).server_cpus == [0, 1]
    with pytest.raises(SystemExit):
        parse_args(["--bundle", "b", "--client-cpus", "-1"])


def test_lengths_beyond_the_bundle_are_skipped_with_a_note(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    main([
        "--bundle", str(tiny_bundle), "--quick", "--skip-http", "--batches", "1",
        "--seq-lens", "8,64", "--out-dir", str(tmp_path),
    ])  # fmt: skip
    (json_path,) = tmp_path.glob("*.json")
    engine = json.loads(json_path.read_text())["engine"]
    assert {r["seq_len"] for r in engine["grid"]} == {8}  # the tiny bundle's max_length is 32
    assert any("max_length 32" in note for note in engine["notes"])
