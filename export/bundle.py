"""Assemble the bundle folder and publish it only whole.

Files are written into a staging folder beside the destination; the destination is replaced
by a rename once everything, manifest included, is on disk. A failed export leaves any earlier
bundle exactly as it was and no partial folder behind.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from service.bundle import CONFIG, TOKENIZER, sha256_file


def write_tokenizer(source: Path, folder: Path) -> Path:
    """Copy the checkpoint's tokenizer with padding and truncation off (the service sets both)."""
    tokenizer = Tokenizer.from_file(str(source))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    target = folder / TOKENIZER
    tokenizer.save(str(target))
    return target


def lowercases(tokenizer_path: Path) -> bool:
    """Whether the tokenizer's normalizer lower-cases (recorded for clients, never re-applied)."""
    normalizer = json.loads(tokenizer_path.read_text()).get("normalizer") or {}
    parts = normalizer.get("normalizers", [normalizer]) if isinstance(normalizer, dict) else []
    return any(
        p.get("type") == "Lowercase" or (p.get("type") == "BertNormalizer" and p.get("lowercase"))
        for p in parts
        if isinstance(p, dict)
    )


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    target = folder / CONFIG
    target.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return target


def hash_tree(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder`, keyed by relative POSIX path."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def tool_versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import tensorflow
    import tf2onnx
    import tokenizers
    import transformers

    modules = (tensorflow, transformers, tf2onnx, onnx, onnxruntime, tokenizers, numpy)
    return {
        "python": platform.python_version(),
        **{m.__name__: str(m.__version__) for m in modules},
    }


def staging_folder(out: Path) -> Path:
    """An empty folder on the destination's file system, so publishing is a rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it owner-only; the service may run as another user
    return staging


def publish(staging: Path, out: Path) -> None:
    """Move the finished `staging` folder to `out`, replacing a previous bundle there."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    previous = None
    if out.exists():
        previous = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(previous / out.name)
    staging.rename(out)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
