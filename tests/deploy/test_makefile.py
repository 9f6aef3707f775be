"""`make serve` and `make docker` serve every bundle under models/ (dry runs: nothing starts)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO


def dry_run(folder: Path, *args: str) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    command = [make, "-n", "-f", str(REPO / "Makefile"), *args]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=30).stdout


OTHERS = "models/a-first,models/sentiment-binary,models/z-last"  # after the default, sorted


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """models/ with three bundles and a folder that is not one; a venv that is 'built'."""
    for name in ("a-first", "sentiment-3class", "sentiment-binary", "z-last"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "manifest.json").write_text("{}")
    (tmp_path / "models" / "scratch").mkdir()
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".base").touch()
    return tmp_path


def test_serve_passes_every_bundle_default_first(checkout: Path) -> None:
    out = dry_run(checkout, "serve")
    found = re.search(r"SENTIMENT_BUNDLES=(\S+)", out)
    assert found, out
    assert found[1] == f"models/sentiment-3class,{OTHERS}"
    out = dry_run(checkout, "serve", "MODEL=models/z-last")
    wanted = "models/z-last,models/a-first,models/sentiment-3class,models/sentiment-binary"
    assert f"SENTIMENT_BUNDLES={wanted} " in out
    assert "SENTIMENT_BUNDLES=/srv/x " in dry_run(checkout, "serve", "BUNDLES=/srv/x")


def test_docker_build_gets_the_same_list_inside_the_image(checkout: Path) -> None:
    out = dry_run(checkout, "docker")
    wanted = ",".join(f"/app/{b}" for b in ("models/sentiment-3class", *OTHERS.split(",")))
    assert f"--build-arg BUNDLES={wanted} " in out, out


def test_image_test_builds_the_same_list_and_docker_gets_the_wheelhouse(checkout: Path) -> None:
    out = dry_run(checkout, "image-test")
    wanted = ",".join(f"/app/{b}" for b in ("models/sentiment-3class", *OTHERS.split(",")))
    assert f"deploy/image/test.sh .venv/bin/python {wanted}" in out, out
    assert "deploy/image/wheels.sh .venv/bin/python wheels" in dry_run(checkout, "docker")


def test_score_scores_a_file_with_the_default_bundle(checkout: Path) -> None:
    out = dry_run(checkout, "score", "IN=tweets.csv", "OUT=scored.csv", "SCORE_ARGS=--entity-col e")
    assert "-m service.score tweets.csv --model models/sentiment-3class --output scored.csv --entity-col e" in out, out  # fmt: skip
    assert "--output" not in dry_run(checkout, "score", "IN=tweets.csv")
