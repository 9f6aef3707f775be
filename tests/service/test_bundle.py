from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from service.bundle import BundleError, load_bundle


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "copy"))


def test_loads_a_verified_bundle(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    assert bundle.labels == ("Negative", "Positive") and bundle.max_length == 16
    assert bundle.model_name == "tiny-test"
    # what `sha256sum manifest.json` prints, computed here without the service's helper
    assert bundle.sha256 == hashlib.sha256((tiny_bundle / "manifest.json").read_bytes()).hexdigest()


def test_an_altered_file_is_refused_by_name(bundle_copy: Path) -> None:
    with open(bundle_copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match=r"model.onnx: sha256 does not match"):
        load_bundle(bundle_copy)
    assert load_bundle(bundle_copy, verify=False).labels  # the check is what refuses it


def test_a_missing_file_or_folder_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match=r"tokenizer.json: missing"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nowhere")


def test_bad_config_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "config.json").write_text(json.dumps({"labels": [], "max_length": 16}))
    with pytest.raises(BundleError, match="labels"):
        load_bundle(bundle_copy, verify=False)
