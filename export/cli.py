"""`python -m export --checkpoint DIR (--data DIR | --texts-file FILE) --out DIR`.

Exit status: 0 bundle written; 1 the graph is not fully fused or the parity gate failed;
2 bad arguments or inputs. Nothing is written to --out unless the status is 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from export.errors import ExportError, FusionError, GateError
from export.parity import Thresholds
from export.quantize import SCHEMES

# The gate's criteria a run may change: flag -> (Thresholds field, flag units per field unit, help).
# One table both ways, so a flag's default and its value in the gate cannot drift apart.
GATE_FLAGS: dict[str, tuple[str, int, str]] = {
    "--max-logit-diff": ("max_logit_diff", 1, "allowed max |fp32 ONNX - TF| logit"),
    "--min-agreement": ("min_agreement", 1, "required int8 vs fp32 label agreement, 0-1"),
    "--max-accuracy-delta-pt": (
        "max_accuracy_delta", 100, "allowed |int8 - fp32| accuracy, in percentage points",
    ),
}  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = Thresholds()
    p = argparse.ArgumentParser(
        prog="python -m export",
        description="Turn a training checkpoint into the int8 ONNX bundle the service runs, "
        "published only if it is fully fused and passes the parity gate.",
        epilog="exit status: 0 bundle written; 1 not fully fused or parity gate failed; "
        "2 bad arguments or inputs",
    )
    p.add_argument("--checkpoint", required=True, help="training checkpoint folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data",
        help="Twitter Entity data folder (gate runs on its clean test split), or with --sources "
        "the folder holding the sources (gate runs on every source's test split)",
    )
    source.add_argument(
        "--texts-file", help="TSV of 'label<TAB>text' (or label, entity, text) lines for the gate"
    )
    p.add_argument(
        "--sources", help="comma-separated sources under --data (training.sources), or 'default'"
    )
    p.add_argument("--out", required=True, help="bundle folder to write (replaced only on success)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    p.add_argument(
        "--max-texts", type=int, help="gate on the first N texts only (tests, smoke runs)"
    )
    p.add_argument(
        "--keep-intermediate", metavar="DIR", help="also keep the fp32/fused graphs here"
    )
    p.add_argument(
        "--model-name", help="model_name in config.json (default: the --out folder name)"
    )
    p.add_argument(
        "--view",
        action="append",
        default=[],
        metavar="NAME=LABEL,LABEL",
        help="another name for the model answering with a subset of its labels, renormalised "
        "(e.g. sentiment-binary=Negative,Positive); repeatable",
    )
    p.add_argument(
        "--quantization",
        choices=SCHEMES,
        default="auto",
        help="int8 scheme: static (per-tensor scales calibrated on training tweets, the faster), "
        "rowwise (per-token scales), or auto: static when it keeps the label agreement on "
        "held-out training tweets, else rowwise (default %(default)s)",
    )
    for flag, (field, scale, text) in GATE_FLAGS.items():
        default = getattr(defaults, field) * scale
        p.add_argument(flag, type=float, default=default, help=f"{text} (default %(default)g)")
    return p.parse_args(argv)


def _thresholds(args: argparse.Namespace) -> Thresholds:
    """The gate's criteria from their flags, back in Thresholds' units."""
    return Thresholds(
        **{
            field: getattr(args, flag.removeprefix("--").replace("-", "_")) / scale
            for flag, (field, scale, _) in GATE_FLAGS.items()
        }
    )


def _sources(value: str | None) -> list[str]:
    if not value:
        return []
    from training.sources import parse_sources

    return parse_sources(value)


def _views(values: Sequence[str]) -> dict[str, list[str]]:
    views = {}
    for value in values:
        name, sep, labels = value.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"python -m export: --view {value!r}: expected NAME=LABEL,LABEL")
        views[name.strip()] = [x.strip() for x in labels.split(",") if x.strip()]
    return views


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from export.pipeline import export_bundle  # after parsing: --help needs no TensorFlow

    try:
        export_bundle(
            args.checkpoint,
            args.out,
            data_dir=args.data,
            texts_file=args.texts_file,
            opset=args.opset,
            max_texts=args.max_texts,
            thresholds=_thresholds(args),
            keep_intermediate=args.keep_intermediate,
            model_name=args.model_name,
            sources=_sources(args.sources),
            quantization=args.quantization,
            views=_views(args.view),
        )
    except (FusionError, GateError) as exc:
        print(f"export failed, nothing written to {args.out}: {exc}", file=sys.stderr)
        return 1
    except ExportError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    return 0
