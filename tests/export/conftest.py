"""Export fixtures: the tiny checkpoint converted once, and one bundle exported end to end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# A random tiny model's int8 labels flip on near-zero margins: its int8 agreement and accuracy
# are noise, so end-to-end tests relax those two criteria (they are unit-tested in
# test_parity.py) and keep the fp32-vs-TF logit criterion at its production value.
TINY_GATE_ARGS = ["--min-agreement", "0.8", "--max-accuracy-delta-pt", "100"]
MAX_TEXTS = 64


@dataclass(frozen=True)
class Converted:
    checkpoint: Any  # export.convert.Checkpoint
    graph: Any  # onnx.ModelProto straight from tf2onnx (do not mutate: copy first)


@pytest.fixture(scope="session")
def converted(tiny_checkpoint: Path) -> Converted:
    from export import convert

    ckpt = convert.load_checkpoint(tiny_checkpoint)
    return Converted(checkpoint=ckpt, graph=convert.to_onnx(ckpt.model, opset=17))


ExportCli = Callable[..., int]


@pytest.fixture(scope="session")
def export_cli(entity_data: Path) -> ExportCli:
    """`export_cli(checkpoint, out, *extra_args)`: the CLI on the first MAX_TEXTS clean test
    texts of the committed-shape data (tests/conftest.py), with the tiny-model gate; returns
    the exit status."""
    from export.cli import main

    def run(checkpoint: Path, out: Path, *extra: str) -> int:
        args = ["--checkpoint", str(checkpoint), "--data", str(entity_data), "--out", str(out)]
        return main([*args, "--max-texts", str(MAX_TEXTS), *TINY_GATE_ARGS, *extra])

    return run


@pytest.fixture(scope="session")
def exported(
    tiny_checkpoint: Path, export_cli: ExportCli, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A bundle exported by the CLI from the tiny checkpoint (read-only: copy before changing)."""
    out = tmp_path_factory.mktemp("exported") / "sentiment-tiny"
    assert export_cli(tiny_checkpoint, out) == 0
    return out


@pytest.fixture(scope="session")
def intermediate(
    tiny_checkpoint: Path, export_cli: ExportCli, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The folder of a row-wise export's kept intermediate graphs (fused, unfused, int8) of the
    tiny checkpoint (read-only)."""
    folder = tmp_path_factory.mktemp("intermediate")
    keep = folder / "keep"
    extra = ["--keep-intermediate", str(keep), "--quantization", "rowwise"]
    assert export_cli(tiny_checkpoint, folder / "bundle", *extra) == 0
    return keep
