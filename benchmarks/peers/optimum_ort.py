"""Peer 2, what a user would pick instead: optimum's ORTModelForSequenceClassification behind
a transformers `pipeline`, called per request from the same kind of async handler.

optimum exports from PyTorch, and this project trains in TensorFlow, so the peer loads the
trained fp32 graph when there is one, else optimum's own export of the packaged pretrained
weights (benchmarks/peers/pretrained.py), together with a transformers config.json and the
bundle's tokenizer. `prepare_model_dir` builds that folder; what the peer was built from is
recorded in the results.

It serves the model's input contract as ours does, or its answers would not be the model's: the
bundle's text normalisation (`--preprocess`, service/preprocess.py) and, for an entity-pair
model (`--text-pair`), "[CLS] entity [SEP] text [SEP]" with the text cut to fit.

Run: python -m benchmarks.peers.optimum_ort --model-dir DIR --max-length 128 --port 8002 \
    [--preprocess tweet-1] [--text-pair]
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from benchmarks.peers.common import PairPredictor, base_parser, make_app, scores_to_result, serve
from service.preprocess import preprocessor

PEER_DEPS_HINT = (
    "optimum peer needs the `peers` extra: pip install torch==2.13.0 'optimum[onnxruntime]==2.1.0' "
    "optimum-onnx==0.1.0"
)


def peer_deps_missing() -> str | None:
    """Why the optimum peer cannot run here, or None when its packages are installed."""
    import importlib.util

    for module in ("torch", "optimum.onnxruntime"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed; {PEER_DEPS_HINT}"
        except ModuleNotFoundError:
            return f"{module} is not installed; {PEER_DEPS_HINT}"
    return None


def prepare_model_dir(
    onnx_model: Path, tokenizer_json: Path, labels: list[str], checkpoint: Path | None, out: Path
) -> Path:
    """A folder optimum can load: model.onnx (a link), config.json, tokenizer.json.

    config.json is the training checkpoint's (a DistilBERT config with id2label) when there is
    one, else a minimal DistilBERT config carrying the bundle's labels.
    """
    out.mkdir(parents=True, exist_ok=True)
    link = out / "model.onnx"
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(onnx_model.resolve())
    shutil.copyfile(tokenizer_json, out / "tokenizer.json")
    if checkpoint is not None and (checkpoint / "config.json").is_file():
        shutil.copyfile(checkpoint / "config.json", out / "config.json")
    else:
        config: dict[str, Any] = {
            "model_type": "distilbert",
            "architectures": ["DistilBertForSequenceClassification"],
            "id2label": {str(i): label for i, label in enumerate(labels)},
            "label2id": {label: i for i, label in enumerate(labels)},
        }
        (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def optimize_and_quantize(model_dir: Path, out: Path, level: str = "O3") -> dict[str, Any]:
    """The strongest peer a careful optimum user builds from the same graph: ORTOptimizer
    (`level`, O2 or O3) then ORTQuantizer with the AVX-512 VNNI dynamic int8 preset (per-channel
    weights). Writes a loadable model folder at `out` (model.onnx, config.json, tokenizer.json)
    and returns what was done, with the fused-op counts the optimizer reached."""
    from collections import Counter

    import onnx
    from optimum.onnxruntime import ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    optimized = out.with_name(out.name + "-optimized")
    optimizer = ORTOptimizer.from_pretrained(model_dir, file_names=["model.onnx"])
    config = getattr(AutoOptimizationConfig, level)()
    optimizer.optimize(config, optimized, file_suffix=None)
    # ONNX shape inference stops at the fused contrib ops, and the quantizer then cannot type
    # the MatMul outputs behind them ("Unable to find data type"). ORT's pre-processing
    # (symbolic shape inference) types them; optimum exposes no other remedy.
    from onnxruntime.quantization.shape_inference import quant_pre_process

    graph = (optimized / "model.onnx").resolve()
    # It leaves a scratch sym_shape_infer_temp.onnx in the working directory: keep it in `out`'s.
    with contextlib.chdir(optimized):
        quant_pre_process(
            graph, graph, skip_optimization=True, auto_merge=True, guess_output_rank=True
        )
    quantizer = ORTQuantizer.from_pretrained(optimized, file_name="model.onnx")
    # The preset's default operator list also takes the optimizer's SkipLayerNormalization,
    # whose inputs the quantizer cannot type ("Unable to find data type"): name the ops with
    # weights, as its docs do.
    qconfig = AutoQuantizationConfig.avx512_vnni(
        is_static=False, per_channel=True, operators_to_quantize=["MatMul", "Attention", "Gather"]
    )
    quantizer.quantize(qconfig, out, file_suffix=None)
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(model_dir / name, out / name)
    ops = Counter(node.op_type for node in onnx.load(out / "model.onnx").graph.node)
    shutil.rmtree(optimized, ignore_errors=True)
    return {
        "optimization": level,
        "quantization": "avx512_vnni dynamic int8, per-channel weights",
        "ops": {k: ops[k] for k in sorted(ops) if ops[k]},
    }


def load_predictor(
    model_dir: Path, max_length: int, preprocess: str | None = None, text_pair: bool = False
) -> PairPredictor:
    """ORTModelForSequenceClassification + text-classification pipeline, warmed with one call:
    (text, entity or None) -> scores, the text normalised by `preprocess` first, and read with
    its entity (empty when None) by a `text_pair` model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import PreTrainedTokenizerFast, pipeline

    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_file=str(model_dir / "tokenizer.json"),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=max_length,
        model_input_names=["input_ids", "attention_mask"],
    )
    model = ORTModelForSequenceClassification.from_pretrained(
        str(model_dir), file_name="model.onnx"
    )
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None)
    labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]

    normalise = preprocessor(preprocess)
    truncation = "only_second" if text_pair else True  # as ours: the entity is kept whole

    def predict(text: str, entity: str | None = None) -> dict[str, object]:
        text = normalise(text) if normalise else text
        inputs: Any = {"text": entity or "", "text_pair": text} if text_pair else text
        out = classify(inputs, truncation=truncation, max_length=max_length)
        ranked = out[0] if out and isinstance(out[0], list) else out
        by_label = {item["label"]: float(item["score"]) for item in ranked}
        return scores_to_result(labels, [by_label[label] for label in labels])

    predict("warm-up call")
    return predict


def main() -> None:
    # This process serves PyTorch-free ONNX: keep transformers from importing TensorFlow too.
    # (Set here, not in load_predictor: it would disable TF for the whole importing process.)
    os.environ["USE_TF"] = "0"
    parser = base_parser(__doc__ or "")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--preprocess", default=None, help="the bundle's text normalisation")
    parser.add_argument("--text-pair", action="store_true", help="an entity-pair model")
    args = parser.parse_args()
    predict = load_predictor(args.model_dir, args.max_length, args.preprocess, args.text_pair)
    serve(make_app(pairs=predict), args.host, args.port)


if __name__ == "__main__":
    main()
