"""TF checkpoint → fp32 ONNX graph with tf2onnx, traced in a form ONNX Runtime can fuse.

`TFDistilBertForSequenceClassification.call` converts, but its graph defeats the BERT fusions:
Keras gelu lowers to Erfc (tf2onnx has no converter), 3-D Dense layers become Tensordot
Reshape–MatMul–Reshape triples, the query is scaled *before* the QK product and the mask is
`scores - 1e30 * (1 - mask)`. So the graph is traced from `fusable_forward`, the same network
written over the checkpoint's own variables with an exact erf gelu, plain 3-D MatMuls, scaling
after QK and BERT's additive mask. It is a re-expression, not a copy: the parity gate compares
its ONNX output against the untouched Keras model on real texts.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ info lines drown the report
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # export never talks to a model hub

import numpy as np
import onnx
import tensorflow as tf

from export.errors import ExportError
from training.checkpoint import SENTIMENT_FILE, CheckpointInfo

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
# int32 ids and mask: what EmbedLayerNormalization and Attention consume, so no Cast is left.
INPUT_DTYPE = np.int32
MASK_FILL = -10000.0  # BERT's additive mask value, the one ORT's Attention fusion matches


@dataclass(frozen=True)
class Checkpoint:
    """A loaded training checkpoint: the Keras classifier plus the facts export must not guess."""

    path: Path
    model: Any  # TFDistilBertForSequenceClassification
    info: CheckpointInfo

    @property
    def n_layers(self) -> int:
        return int(self.model.config.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.model.config.n_heads)

    @property
    def dim(self) -> int:
        return int(self.model.config.dim)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def pad_id(self) -> int:
        return int(self.model.config.pad_token_id or 0)


def load_checkpoint(folder: str | Path) -> Checkpoint:
    """Load a checkpoint written by `training.checkpoint.save_checkpoint`, refusing what the
    fusable forward pass does not reproduce (other activations, label count mismatch)."""
    from transformers import TFDistilBertForSequenceClassification

    path = Path(folder)
    for name in ("config.json", "tf_model.h5", "tokenizer.json", SENTIMENT_FILE):
        if not (path / name).is_file():
            raise ExportError(f"checkpoint {path} is incomplete: {name} is missing")
    info = CheckpointInfo.load(path)
    model = TFDistilBertForSequenceClassification.from_pretrained(path, local_files_only=True)
    config = model.config
    if config.activation != "gelu":
        raise ExportError(f"activation {config.activation!r} is not supported (only exact 'gelu')")
    if config.dim % config.n_heads:
        raise ExportError(f"dim {config.dim} is not a multiple of n_heads {config.n_heads}")
    if config.num_labels != len(info.labels):
        raise ExportError(
            f"the classifier has {config.num_labels} outputs but sentiment.json lists "
            f"{len(info.labels)} labels"
        )
    if info.max_length > config.max_position_embeddings:
        raise ExportError(
            f"max_length {info.max_length} exceeds the model's "
            f"{config.max_position_embeddings} position embeddings"
        )
    return Checkpoint(path=path, model=model, info=info)


def reference_logits(model: Any, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Logits of the Keras model itself: the ground truth every exported graph is held to."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, training=False)
    return np.asarray(out.logits.numpy(), dtype=np.float32)


def _dense(x: Any, layer: Any) -> Any:
    # A plain (batched) MatMul: Keras' 3-D Dense would become Reshape–MatMul–Reshape.
    return tf.matmul(x, layer.kernel) + layer.bias


def _layer_norm(x: Any, layer: Any) -> Any:
    # Written out in the ReduceMean–Sub–Pow–ReduceMean–Add–Sqrt–Div form ORT fuses.
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    centered = x - mean
    variance = tf.reduce_mean(tf.pow(centered, 2.0), axis=-1, keepdims=True)
    return centered / tf.sqrt(variance + layer.epsilon) * layer.gamma + layer.beta


def _gelu(x: Any) -> Any:
    # Exact gelu through erf (Keras lowers it to Erfc, which tf2onnx cannot convert).
    return x * (0.5 * (1.0 + tf.math.erf(x * (1.0 / math.sqrt(2.0)))))


def fusable_forward(model: Any) -> Any:
    """A tf.function (input_ids, attention_mask: int32 [batch, seq]) -> {"logits": [batch, labels]}
    computing the classifier's forward pass in the shape ORT's BERT fusions recognise."""
    config = model.config
    heads, dim = int(config.n_heads), int(config.dim)
    head_dim = dim // heads
    embeddings = model.distilbert.embeddings
    blocks = list(model.distilbert.transformer.layer)

    def forward(input_ids: Any, attention_mask: Any) -> dict[str, Any]:
        shape = tf.shape(input_ids)
        batch = shape[0]
        positions = tf.broadcast_to(tf.expand_dims(tf.range(shape[1]), 0), shape)
        x = tf.gather(embeddings.weight, input_ids) + tf.gather(
            embeddings.position_embeddings, positions
        )
        x = _layer_norm(x, embeddings.LayerNorm)
        mask = tf.cast(tf.expand_dims(tf.expand_dims(attention_mask, 1), 1), tf.float32)
        additive_mask = (1.0 - mask) * MASK_FILL  # [batch, 1, 1, seq]

        def split_heads(t: Any, perm: list[int]) -> Any:
            return tf.transpose(tf.reshape(t, [batch, -1, heads, head_dim]), perm)

        for block in blocks:
            attn = block.attention
            q = split_heads(_dense(x, attn.q_lin), [0, 2, 1, 3])
            k = split_heads(_dense(x, attn.k_lin), [0, 2, 3, 1])  # already transposed for QK
            v = split_heads(_dense(x, attn.v_lin), [0, 2, 1, 3])
            scores = tf.matmul(q, k) / math.sqrt(head_dim)  # scaled after QK, not before
            probs = tf.nn.softmax(scores + additive_mask, axis=-1)
            context = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), [batch, -1, dim])
            x = _layer_norm(_dense(context, attn.out_lin) + x, block.sa_layer_norm)
            hidden = _dense(_gelu(_dense(x, block.ffn.lin1)), block.ffn.lin2)
            x = _layer_norm(hidden + x, block.output_layer_norm)
        pooled = model.pre_classifier(x[:, 0])  # 2-D Dense layers convert as they are
        return {OUTPUT_NAME: model.classifier(pooled)}

    signature = [tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUT_NAMES]
    return tf.function(forward, input_signature=signature)


def to_onnx(model: Any, opset: int = 17) -> onnx.ModelProto:
    """Convert `fusable_forward(model)` with tf2onnx; batch and sequence axes stay dynamic."""
    import tf2onnx

    if opset < 17:
        raise ExportError(f"opset {opset} is too old: the export needs opset >= 17")
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    forward = fusable_forward(model)
    proto, _ = tf2onnx.convert.from_function(
        forward, input_signature=forward.input_signature, opset=opset
    )
    if not isinstance(proto, onnx.ModelProto):
        raise ExportError("tf2onnx returned no model")
    names = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    if names != (list(INPUT_NAMES), [OUTPUT_NAME]):
        raise ExportError(f"unexpected ONNX inputs/outputs after conversion: {names}")
    _name_dynamic_axes(proto)
    return proto


def _name_dynamic_axes(proto: onnx.ModelProto) -> None:
    """Call the free axes "batch" and "sequence" instead of tf2onnx's unk__N: one shared name
    also tells shape inference that ids and mask have the same shape."""
    for value in proto.graph.input:
        for dim, name in zip(value.type.tensor_type.shape.dim, ("batch", "sequence"), strict=True):
            dim.dim_param = name
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
