"""The Locust file, headless for a few seconds against a real tiny server."""

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.load import main
from benchmarks.ports import free_port
from benchmarks.server_process import Server

pytestmark = pytest.mark.slow  # a real server process under Locust


def test_locust_runs_headless_with_no_failures(
    tiny_bundle: Path, tiny_data: Path, tmp_path: Path, tiny_server_argv: Callable[..., list[str]]
) -> None:
    port = free_port()
    with Server("tiny", tiny_server_argv(tiny_bundle, port), port):
        code = main(
            [
                "--host",
                f"http://127.0.0.1:{port}",
                "--data",
                str(tiny_data),
                "--users",
                "5",
                "--spawn-rate",
                "5",
                "--run-time",
                "3s",
                "--out-dir",
                str(tmp_path),
                "--name",
                "t",
            ]
        )
    summary = json.loads((tmp_path / "t_summary.json").read_text())
    assert code == 0
    assert summary["failures"] == 0 and summary["requests"] > 0 and summary["users"] == 5
    assert "twitter_validation.csv" in summary["tweets"]
    assert (tmp_path / "t_stats.csv").is_file()
    assert (tmp_path / "t.html").read_text().lower().startswith("<!doctype html>")


def test_locust_reports_failed_requests(
    tiny_bundle: Path, tmp_path: Path, tiny_server_argv: Callable[..., list[str]]
) -> None:
    port = free_port()
    with Server("tiny", tiny_server_argv(tiny_bundle, port, "--fail-every", "3"), port):
        code = main(
            [
                "--host",
                f"http://127.0.0.1:{port}",
                "--users",
                "2",
                "--spawn-rate",
                "2",
                "--run-time",
                "2s",
                "--out-dir",
                str(tmp_path),
                "--name",
                "f",
            ]
        )
    summary = json.loads((tmp_path / "f_summary.json").read_text())
    assert code != 0
    assert summary["failures"] > 0
    assert "built-in" in summary["tweets"]


@pytest.mark.skipif(
    importlib.util.find_spec("service.__main__") is None, reason="service not in this tree yet"
)
@pytest.mark.parametrize("kind", ["plain", "entity-pair"])
def test_load_starts_and_stops_the_real_service(
    kind: str, tiny_bundle: Path, pair_bundle: Path, tmp_path: Path
) -> None:
    # the locustfile asks /info whether to send each tweet's entity
    bundle = pair_bundle if kind == "entity-pair" else tiny_bundle
    code = main([
        "--bundle", str(bundle), "--users", "4", "--spawn-rate", "4", "--run-time", "2s",
        "--out-dir", str(tmp_path), "--name", "s",
    ])  # fmt: skip
    summary = json.loads((tmp_path / "s_summary.json").read_text())
    assert code == 0 and summary["failures"] == 0 and summary["requests"] > 0
