"""The model bundle: the one artifact export ships and the service runs.

A bundle is a folder with `model.onnx`, `tokenizer.json`, `config.json` and `manifest.json`.
The manifest pins every other file by sha256, so a service never runs a model that differs
from the one whose parity and accuracy the export proved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.preprocess import preprocessor

MANIFEST = "manifest.json"
MODEL = "model.onnx"
TOKENIZER = "tokenizer.json"
CONFIG = "config.json"
REQUIRED_FILES = (MODEL, TOKENIZER, CONFIG)
MANIFEST_FORMAT = 1


class BundleError(RuntimeError):
    """The bundle is missing, incomplete or does not match its manifest."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(folder: Path, names: tuple[str, ...] = REQUIRED_FILES) -> dict[str, Any]:
    """The manifest's `files` section for `names` in `folder`."""
    return {
        name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
        for name in names
    }


def write_manifest(folder: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Hash the bundle's files and write `manifest.json`; `extra` adds metrics, versions, ..."""
    manifest = {"format": MANIFEST_FORMAT, **extra, "files": file_entries(Path(folder))}
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


@dataclass(frozen=True)
class Bundle:
    path: Path
    labels: tuple[str, ...]
    max_length: int
    model_name: str
    manifest: dict[str, Any]
    text_pair: bool = False  # the model reads "[CLS] entity [SEP] text [SEP]"
    preprocess: str | None = None  # a service.preprocess name; None: text as given
    # Other names for the same model: a view answers with a subset of the labels, its
    # probabilities renormalised over that subset (e.g. "sentiment-binary": Negative, Positive).
    views: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER

    @property
    def sha256(self) -> str:
        """Identity of the whole bundle: the hash of its manifest."""
        return sha256_file(self.path / MANIFEST)


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read a bundle's config and manifest; with `verify`, refuse any file that fails its hash."""
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"bundle folder not found: {folder}")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        config = json.loads((folder / CONFIG).read_text())
    except FileNotFoundError as exc:
        raise BundleError(f"bundle {folder} is incomplete: {exc.filename} is missing") from exc
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle {folder} has an unreadable JSON file: {exc}") from exc
    if verify:
        verify_manifest(folder, manifest)
    labels = config.get("labels")
    max_length = config.get("max_length")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise BundleError(f"{folder / CONFIG}: 'labels' must be a non-empty list of strings")
    if not isinstance(max_length, int) or max_length < 2:
        raise BundleError(f"{folder / CONFIG}: 'max_length' must be an integer >= 2")
    text_pair = config.get("text_pair", False)
    if not isinstance(text_pair, bool):
        raise BundleError(f"{folder / CONFIG}: 'text_pair' must be true or false")
    model_name = str(config.get("model_name", folder.name))
    return Bundle(
        path=folder,
        labels=tuple(labels),
        max_length=max_length,
        model_name=model_name,
        manifest=manifest,
        text_pair=text_pair,
        preprocess=_preprocess(folder, config.get("preprocess")),
        views=check_views(config.get("views", {}), labels, model_name, f"{folder / CONFIG}: "),
    )


def _preprocess(folder: Path, name: Any) -> str | None:
    try:
        preprocessor(name)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{folder / CONFIG}: 'preprocess': {exc}") from None
    return None if name is None else str(name)


def check_views(
    views: Any, labels: Sequence[str], own: str, where: str = ""
) -> dict[str, tuple[str, ...]]:
    """`views` maps a name to two or more of the model's labels; every name is new. The one
    rule: the service loads by it, the export writes by it."""
    where = f"{where}'views'"
    if not isinstance(views, dict):
        raise BundleError(f"{where} must map names to label lists")
    out: dict[str, tuple[str, ...]] = {}
    for name, subset in views.items():
        if name == own:
            raise BundleError(f"{where}: {name!r} is the model's own name")
        if (
            not isinstance(subset, list)
            or len(subset) < 2
            or len(set(subset)) != len(subset)
            or not set(subset) <= set(labels)
        ):
            raise BundleError(
                f"{where}: {name!r} must list two or more distinct labels of {labels}"
            )
        out[str(name)] = tuple(subset)
    return out


def verify_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Raise BundleError naming every file that is missing, unlisted or altered."""
    files = manifest.get("files")
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
        raise BundleError(f"{folder / MANIFEST}: not a format-{MANIFEST_FORMAT} manifest")
    problems = [
        f"{name}: not listed in the manifest" for name in REQUIRED_FILES if name not in files
    ]
    for name, entry in sorted(files.items()):
        target = folder / name
        if not target.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(target) != entry.get("sha256"):
            problems.append(f"{name}: sha256 does not match the manifest (file altered)")
    if problems:
        raise BundleError(f"bundle {folder} failed verification: " + "; ".join(problems))
