"""A tiny, fast, hub-free model bundle, shared by the service, benchmark and deploy tests.

The model: logits = mean over unmasked tokens of a [vocab, labels] table lookup. Results depend
on the tokens and on the attention mask (the pad row of the table is not zero), so batched and
single runs only agree if padding and masking are right. Sentiment words get strong rows, so
"I love this" is Positive. `slow=N` adds N [hidden x hidden] MatMuls per token whose result is
multiplied by zero: same answers, more CPU per token (to build queues in load tests).
`words=[...]` swaps the default vocabulary (words, letters, digits and ## pieces: few [UNK]s) for
the special tokens plus exactly those words, so every other word is one [UNK]. `labels=[...]`
sets the label set (any size: negative words score the first label, positive words the last) and
`model_name=` the name the service serves it under; `preprocess=` and `views=` go into
config.json as export writes them.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from service.bundle import write_manifest
from tests.conftest import onnx_model

LABELS = ["Negative", "Positive"]
MAX_LENGTH = 16
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "love", "happy", "awesome", "best"]
NEGATIVE = ["bad", "awful", "hate", "sad", "worst", "broken"]
NEUTRAL = ["the", "a", "this", "game", "movie", "is", "i", "it", "update", "today", "!", "?", "."]


def vocabulary(words: Sequence[str] | None = None) -> dict[str, int]:
    """Token -> id ([PAD] is 0): the default vocabulary, or the special tokens and `words`."""
    if words is None:
        tokens = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL
        tokens += list(string.ascii_lowercase) + list(string.digits)
        tokens += ["##" + c for c in string.ascii_lowercase + string.digits]
    else:
        tokens = SPECIAL + list(words)
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


def build_tokenizer(path: Path, words: Sequence[str] | None = None) -> Tokenizer:
    """A lower-casing WordPiece tokenizer with BERT's [CLS] ... [SEP] template, saved to `path`."""
    vocab = vocabulary(words)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.save(str(path))
    return tokenizer


def build_model(
    path: Path,
    vocab: dict[str, int],
    *,
    ids_type: int = TensorProto.INT64,
    slow: int = 0,
    coupled: bool = False,
    seed: int = 0,
    n_labels: int = len(LABELS),
) -> None:
    """input_ids, attention_mask ([batch, seq] of `ids_type`) -> logits [batch, n_labels]."""
    vocab_size = len(vocab)
    rng = np.random.default_rng(seed)
    table = rng.normal(0.0, 0.5, (vocab_size, n_labels)).astype(np.float32)
    for words, hot in ((POSITIVE, -1), (NEGATIVE, 0)):
        for word in words:
            if word in vocab:
                table[vocab[word]] = -3.0
                table[vocab[word], hot] = 3.0
    table[0] = -5.0
    table[0, 0] = 5.0  # [PAD]: wrong masking would show
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["maskf", "axis1"], ["count"], keepdims=1),
        helper.make_node("Div", ["summed", "count"], ["mean"]),
    ]
    out = "mean"
    if coupled:  # like dynamic int8: each row's answer depends on its batch-mates
        tilt = np.array([[2.0] + [-2.0] * (n_labels - 1)], np.float32)
        inits.append(numpy_helper.from_array(tilt, "tilt"))
        nodes += [
            helper.make_node("ReduceMean", ["masked"], ["batch_max"], keepdims=0),
            helper.make_node("Mul", ["batch_max", "tilt"], ["shift"]),
            helper.make_node("Add", ["mean", "shift"], ["coupled"]),
        ]
        out = "coupled"
    if slow:
        hidden = 256
        inits.append(
            numpy_helper.from_array(
                rng.normal(size=(vocab_size, hidden)).astype(np.float32) * 0.01, "wide"
            )
        )
        inits.append(numpy_helper.from_array(np.zeros((1, n_labels), np.float32), "zero"))
        nodes.append(helper.make_node("Gather", ["wide", "input_ids"], ["h0"], axis=0))
        for i in range(slow):
            weight = (rng.normal(size=(hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
            inits.append(numpy_helper.from_array(weight, f"w{i}"))
            nodes.append(helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"m{i}"]))
            nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]))
        nodes += [
            helper.make_node("ReduceMean", [f"h{slow}"], ["pooled"], axes=[1], keepdims=0),
            helper.make_node("ReduceSum", ["pooled", "axis1"], ["pooled1"], keepdims=1),
            helper.make_node("Mul", ["pooled1", "zero"], ["nothing"]),
            helper.make_node("Add", ["mean", "nothing"], ["logits_slow"]),
        ]
        out = "logits_slow"
    nodes.append(helper.make_node("Identity", [out], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "tiny-sentiment",
        [
            helper.make_tensor_value_info("input_ids", ids_type, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", ids_type, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_labels])],
        inits,
    )
    model = onnx_model(graph, [helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_bundle(
    folder: Path,
    *,
    ids_type: int = TensorProto.INT64,
    slow: int = 0,
    coupled: bool = False,
    max_length: int = MAX_LENGTH,
    labels: list[str] | None = None,
    words: Sequence[str] | None = None,
    text_pair: bool = False,
    model_name: str = "tiny-test",
    preprocess: str | None = None,
    views: dict[str, list[str]] | None = None,
) -> Path:
    """Write a complete, manifest-verified bundle into `folder` and return it (`text_pair`: the
    model is declared to read "[CLS] entity [SEP] text [SEP]")."""
    labels = labels or LABELS
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(folder / "tokenizer.json", words)
    build_model(
        folder / "model.onnx",
        vocabulary(words),
        ids_type=ids_type,
        slow=slow,
        coupled=coupled,
        n_labels=len(labels),
    )
    config = {
        "labels": labels,
        "max_length": max_length,
        "model_name": model_name,
        "text_pair": text_pair,
        **({"preprocess": preprocess} if preprocess else {}),
        **({"views": views} if views else {}),
    }
    (folder / "config.json").write_text(json.dumps(config))
    write_manifest(folder, {"note": "tiny test model", "metrics": {"accuracy": None}})
    return folder
