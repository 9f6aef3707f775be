"""One walk through the whole product: `python -m training` → `python -m export` → the HTTP API.

A tiny model on tiny, separable data, so the answers are known: the served labels must be the
TF checkpoint's labels, and right.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from tests.conftest import train_until_learned
from training.data import VALIDATION_FILE, read_rows

pytestmark = pytest.mark.slow


def test_train_export_serve(tmp_path: Path, tiny_base: Path, tiny_data: Path) -> None:
    from transformers import AutoTokenizer, TFDistilBertForSequenceClassification

    from export.cli import main as export_main
    from service import Settings, create_app

    bundle = tmp_path / "bundle"
    # an untrained model's near-zero margins cannot pass the production int8 gate
    run = train_until_learned(tmp_path, tiny_base, tiny_data, "--no-leaky")
    assert (
        export_main(
            ["--checkpoint", str(run / "model"), "--data", str(tiny_data), "--out", str(bundle)]
        )
        == 0
    )  # the production gate: 1e-3 logits, 99% int8 agreement, 0.5 pt accuracy
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["fusion"]["Attention"] == 2

    assert json.loads((bundle / "config.json").read_text())["text_pair"] is True  # the default

    rows, _ = read_rows(tiny_data / VALIDATION_FILE)
    texts, entities = [r.text for r in rows], [r.entity for r in rows]
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    model = TFDistilBertForSequenceClassification.from_pretrained(run / "model")
    batch = tokenizer(entities, texts, padding=True, return_tensors="np")
    tf_labels = [model.config.id2label[int(i)] for i in np.argmax(model(**batch).logits, axis=1)]

    settings = Settings(bundle=bundle, warmup=True)
    with TestClient(create_app(settings)) as client:
        assert client.get("/ready").status_code == 200
        one = client.post("/predict", json={"text": texts[0], "entity": entities[0]})
        assert one.status_code == 200 and one.json()["label"] == tf_labels[0]
        items = [{"text": t, "entity": e} for t, e in zip(texts, entities, strict=True)]
        many = client.post("/predict", json={"texts": items})
        assert many.status_code == 200
        served = [p["label"] for p in many.json()["predictions"]]
    assert served == tf_labels
    assert np.mean([s == r.label for s, r in zip(served, rows, strict=True)]) >= 0.9
