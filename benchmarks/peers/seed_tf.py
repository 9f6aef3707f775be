"""Peer 1, the seed's architecture: the TF DistilBERT checkpoint called per request.

The seed served `TFDistilBertForSequenceClassification` from an async FastAPI handler, one
eager model call per request on the event loop. This reproduces exactly that on Starlette
(FastAPI's core) with the project's own trained checkpoint, so the comparison is about the
architecture, not the weights.

Run: python -m benchmarks.peers.seed_tf --checkpoint runs/binary/model --port 8001
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.peers.common import Predictor, base_parser, make_app, scores_to_result, serve


def load_predictor(checkpoint: Path) -> Predictor:
    """Tokenizer + TF model from a training checkpoint folder; warmed with one call."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import tensorflow as tf
    from transformers import AutoTokenizer, TFAutoModelForSequenceClassification

    from training.checkpoint import CheckpointInfo

    info = CheckpointInfo.load(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))  # type: ignore[no-untyped-call]
    model = TFAutoModelForSequenceClassification.from_pretrained(str(checkpoint))

    def predict(text: str) -> dict[str, object]:
        encoded = tokenizer(text, truncation=True, max_length=info.max_length, return_tensors="tf")
        logits = model(dict(encoded)).logits
        probabilities = tf.nn.softmax(logits, axis=-1).numpy()[0].tolist()
        return scores_to_result(list(info.labels), probabilities)

    predict("warm-up call so the first request does not pay for tracing")
    return predict


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--checkpoint", type=Path, required=True)
    args = parser.parse_args()
    serve(make_app(load_predictor(args.checkpoint)), args.host, args.port)


if __name__ == "__main__":
    main()
