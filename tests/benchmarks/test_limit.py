"""The int8 work the shipped graph does, counted from the graph itself."""

from __future__ import annotations

from pathlib import Path

import onnx

from benchmarks.limit import int8_macs

BINARY = Path(__file__).resolve().parents[2] / "models" / "sentiment-binary" / "model.onnx"


def test_int8_macs_of_the_shipped_graph_match_its_shapes() -> None:
    """6 layers x (QKV 384x1152 + out 384x384 + FFN 384x1536 + 1536x384), then the head's
    pre-classifier 384x384 and classifier 384x2: 26 int8 GEMMs."""
    layer = 384 * 1152 + 384 * 384 + 384 * 1536 + 1536 * 384
    got = int8_macs(onnx.load(BINARY, load_external_data=False))
    assert got == {"int8_gemms": 26, "macs_per_token": 6 * layer + 384 * 384 + 384 * 2}
