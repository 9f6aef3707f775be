"""Turn a trained TF checkpoint into the bundle the service runs, and prove it is faithful.

Light on import: `export_bundle` pulls in TensorFlow only when it is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from export.errors import ExportError, FusionError, GateError
from export.parity import Thresholds

if TYPE_CHECKING:
    from export.pipeline import ExportResult, export_bundle

__all__ = ["ExportError", "ExportResult", "FusionError", "GateError", "Thresholds", "export_bundle"]


def __getattr__(name: str) -> Any:
    if name in ("export_bundle", "ExportResult"):
        from export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
