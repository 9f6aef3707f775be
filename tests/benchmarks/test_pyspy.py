from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import http, pyspy
from benchmarks.ports import free_port


def test_summarize_groups_samples_by_innermost_known_frame(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        'process 1:"python -m service";main (service/__main__.py:10);'
        "run (onnxruntime/capi/onnxruntime_inference_collection.py:266) 6\n"
        'process 1:"python -m service";handle (uvicorn/protocols/http/httptools_impl.py:40);'
        "encode (service/engine.py:80) 3\n"
        'process 1:"python -m service";main (service/__main__.py:10) 1\n'
        "garbage line without a count\n"
    )
    summary = pyspy.summarize(raw)
    assert summary["samples"] == 10
    assert summary["categories"] == [
        {"category": "onnxruntime session.run", "share": 0.6},
        {"category": "tokenizer", "share": 0.3},
        {"category": "other Python", "share": 0.1},
    ]
    assert summary["top_self"][0] == {
        "function": "run (onnxruntime/capi/onnxruntime_inference_collection.py)",
        "share": 0.6,
    }


@pytest.mark.slow  # a server process under py-spy
@pytest.mark.skipif(pyspy.binary() is None, reason="py-spy is not installed")
def test_profile_run_samples_a_live_server(
    tiny_bundle: Path, tiny_server_argv: Callable[..., list[str]]
) -> None:
    port = free_port()
    plan = http.Plan(["I love this game"], [2], warmup=0.2, duration=1.0, timeout=5.0)
    result = http.bench_server(
        "tiny", tiny_server_argv(tiny_bundle, port), {}, port, plan, profile=True,
        log=lambda _: None,
    )  # fmt: skip
    runs = [(result[f"py_spy{kind}{who}"], level, kind == "_gil")
            for kind in ("", "_gil") for who, level in (("", 2), ("_one_user", 1))]  # fmt: skip
    for run, level, gil in runs:  # the top level, then one user; running, then GIL (#23)
        assert "skipped" not in run, run.get("skipped")
        assert run["level"] == level and run["gil"] is gil and run["samples"] > 0
        assert sum(c["share"] for c in run["categories"]) == pytest.approx(1.0, abs=0.01)
        by_stage = run["stages"]
        assert by_stage["requests"] > 0 and by_stage["cpu_us"] > 0
        # The loop is one of the threads (both read in 10 ms clock ticks: leave them room).
        assert 0 < by_stage["loop_cpu_us"] <= 1.25 * by_stage["cpu_us"]
        stage_samples = sum(row["samples"] for row in by_stage["stages"])
        assert stage_samples == by_stage["outside_inference"]["samples"]
        assert stage_samples + by_stage["inference"]["samples"] == run["samples"]
    assert len(result["levels"]) == 1  # the profiled runs are not counted levels
