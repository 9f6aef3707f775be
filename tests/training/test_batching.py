"""training/batching.py: the texts go through the named normalisation, never the entities."""

from __future__ import annotations


def test_training_encodes_the_normalised_text_and_keeps_the_entity() -> None:
    from tests.service.tiny_bundle import build_tokenizer
    from training.batching import encode
    from training.data import Row

    class Wrapped:  # the call shape of a transformers tokenizer, on a tokenizers one
        def __init__(self, tok: object) -> None:
            self.tok = tok

        def __call__(self, first: list[str], second: list[str], **_: object) -> dict[str, object]:
            pairs = self.tok.encode_batch(list(zip(first, second, strict=True)))  # type: ignore[attr-defined]
            return {"input_ids": [p.ids for p in pairs]}

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        tok = build_tokenizer(Path(tmp) / "t.json", ["@", "user", "bob", "http", "sad"])
    rows = [Row(1, "@bob", "Negative", "sad @bob http://t.co/x")]
    raw = encode(Wrapped(tok), rows, ["Negative", "Positive"], 32, True)
    normalised = encode(Wrapped(tok), rows, ["Negative", "Positive"], 32, True, "tweet-1")
    expected = tok.encode("@bob", "sad @user http").ids
    assert normalised.ids[0].tolist() == expected
    assert raw.ids[0].tolist() != expected
