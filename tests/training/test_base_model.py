"""The BERT → DistilBERT conversion is exact: checked against an independent numpy BERT."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from training import base_model

TWEETS = [
    "im getting on borderlands and i will murder you all ,",
    "@Microsoft why do I pay for WORD when it functions so poorly on my @SamsungUS Chromebook? 🙄",
    "Loving the new update!!! 😍 best patch in years",
    "the servers are down AGAIN... unbelievable, refund please",
]


def numpy_bert(
    weights: dict[str, np.ndarray], ids: np.ndarray, heads: int, eps: float
) -> np.ndarray:
    """BERT's encoder written straight from the paper's equations, one sequence, no padding."""

    def norm(x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * weights[f"{name}.weight"] + weights[f"{name}.bias"]

    def dense(x: np.ndarray, name: str) -> np.ndarray:
        return x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]

    n = len(ids)
    h = (
        weights["embeddings.word_embeddings.weight"][ids]
        + weights["embeddings.position_embeddings.weight"][:n]
        + weights["embeddings.token_type_embeddings.weight"][0]
    )
    h = norm(h.astype(np.float64), "embeddings.LayerNorm")
    d = h.shape[-1] // heads
    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in weights:
        p = f"encoder.layer.{layer}"
        q, k, v = (
            dense(h, f"{p}.attention.self.{x}").reshape(n, heads, d).transpose(1, 0, 2)
            for x in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(n, heads * d)
        h = norm(
            h + dense(context, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm"
        )
        inner = dense(h, f"{p}.intermediate.dense")
        inner = 0.5 * inner * (1.0 + erf(inner / np.sqrt(2.0)))
        h = norm(h + dense(inner, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        layer += 1
    return h


@pytest.mark.slow
def test_converted_distilbert_reproduces_bert_on_real_tweets() -> None:
    from transformers import TFDistilBertModel

    folder = base_model.convert_minilm()
    model_dir = base_model.fetch_minilm()
    bert = base_model.bert_config(model_dir)
    weights = {k: v.astype(np.float64) for k, v in base_model.load_bert_weights(model_dir).items()}
    tokenizer = base_model.load_tokenizer(model_dir)
    model = TFDistilBertModel.from_pretrained(folder)

    batch = tokenizer(TWEETS, padding=True, return_tensors="np")
    hidden = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state.numpy()
    worst = 0.0
    for row, mask in enumerate(batch["attention_mask"]):
        n = int(mask.sum())
        reference = numpy_bert(
            weights,
            batch["input_ids"][row, :n],
            bert["num_attention_heads"],
            bert["layer_norm_eps"],
        )
        worst = max(worst, float(np.abs(hidden[row, :n] - reference).max()))
    assert worst <= 1e-4, f"max |Δ hidden| = {worst:.2e}"


def test_tokenizer_has_no_baked_in_padding_or_truncation() -> None:
    tokenizer = base_model.load_tokenizer(base_model.fetch_minilm())
    short = tokenizer("good game")["input_ids"]
    assert short[0] == tokenizer.cls_token_id and short[-1] == tokenizer.sep_token_id
    assert len(short) < 10  # not padded to 128
    assert len(tokenizer("word " * 300)["input_ids"]) > 128  # not truncated at 128
