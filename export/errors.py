"""Why an export stopped: the CLI maps each to an exit status and nothing is shipped."""

from __future__ import annotations


class ExportError(RuntimeError):
    """The inputs cannot be exported (missing checkpoint, unsupported config, bad texts file)."""


class FusionError(ExportError):
    """The optimized graph is not fully fused, so it would not run at the speed we claim."""


class GateError(ExportError):
    """The exported graphs disagree with the TF checkpoint beyond the parity thresholds."""
