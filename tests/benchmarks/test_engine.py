from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from benchmarks import engine
from service.bundle import Bundle, load_bundle

TEXTS = ["I love this game", "worst update ever, I hate it", "the best", "awful awful awful game"]
Parts = tuple[Bundle, Tokenizer, np.ndarray]
BUDGET = engine.Budget(min_seconds=0.0, min_reps=3, max_reps=3, warmup_reps=1)


@pytest.fixture(scope="module")
def parts(tiny_bundle: Path) -> Parts:
    bundle = load_bundle(tiny_bundle)
    tokenizer = engine.load_tokenizer(bundle.tokenizer_path, bundle.max_length)
    return bundle, tokenizer, engine.token_pool(tokenizer, TEXTS)


def test_grid_covers_every_case_with_its_schema(parts: Parts) -> None:
    bundle, _, pool = parts
    models = {"int8": bundle.model_path, "fp32": bundle.model_path}
    rows = engine.grid(models, pool, [1, 4], [8, 16], [1, 2], BUDGET, log=lambda _: None)
    assert len(rows) == 2 * 2 * 2 * 2
    keys = {(r["precision"], r["threads"], r["batch"], r["seq_len"]) for r in rows}
    assert len(keys) == len(rows)
    for row in rows:
        assert row["n"] == 3
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["seq_per_s"] > 0


def test_synthetic_batch_has_requested_shape_and_real_ids(parts: Parts) -> None:
    _, _tokenizer, pool = parts
    ids, mask = engine.synthetic_batch(pool, 3, 50)  # longer than the pool: it repeats
    assert ids.shape == mask.shape == (3, 50)
    assert mask.all()
    assert set(ids.ravel()) <= set(pool.tolist())


def test_feed_follows_the_graph_dtypes(parts: Parts) -> None:
    bundle, _, pool = parts
    session = engine.make_session(bundle.model_path, 1)
    feed = engine.make_feed(session, *engine.synthetic_batch(pool, 2, 4))
    assert set(feed) == {"input_ids", "attention_mask"}
    assert all(v.dtype == np.int64 for v in feed.values())


def test_sessions_take_the_services_settings(parts: Parts) -> None:
    bundle, _, _ = parts
    options = engine.make_session(bundle.model_path, 2).get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_tokenizer_cost_and_real_text_throughput(parts: Parts) -> None:
    bundle, tokenizer, _ = parts
    cost = engine.tokenizer_cost(tokenizer, TEXTS, BUDGET)
    assert cost["texts"] == 4 and cost["encode_us_per_text"] > 0
    # [CLS] worst update ever , i hate it [SEP]: unknown words and "," are [UNK]s
    assert cost["tokens_max"] == 9
    long_text = [" ".join(["love"] * 100)]
    assert engine.tokenizer_cost(tokenizer, long_text, BUDGET)["tokens_max"] == bundle.max_length
    rows = engine.real_text_throughput(bundle, TEXTS, [1, 2], 1, 0.05, log=lambda _: None)
    assert [(r["order"], r["batch"]) for r in rows] == [
        ("arrival", 1),
        ("arrival", 2),
        ("length_sorted", 1),
        ("length_sorted", 2),
    ]
    # whole passes only: every order and batch size sees exactly the same texts
    assert all(r["texts"] == r["passes"] * len(TEXTS) and r["texts_per_s"] > 0 for r in rows)


def test_real_text_throughput_sends_entities_to_a_pair_model(
    pair_bundle: Path, tiny_bundle: Path
) -> None:
    entities = ["the game"] * len(TEXTS)
    rows = engine.real_text_throughput(
        load_bundle(pair_bundle), TEXTS, [2], 1, 0.01, log=lambda _: None, entities=entities
    )
    assert len(rows) == 2 and all(r["texts_per_s"] > 0 for r in rows)
    with pytest.raises(ValueError, match="takes no entities"):  # they reach the engine
        engine.real_text_throughput(
            load_bundle(tiny_bundle), TEXTS, [2], 1, 0.01, log=lambda _: None, entities=entities
        )


def test_ort_profile_attributes_time_to_the_graphs_op_types(parts: Parts) -> None:
    bundle, _, pool = parts
    profile = engine.op_profile(bundle.model_path, pool, 2, 8, 1, runs=2)
    ops = {op["op_type"] for op in profile["ops"]}
    assert {"Gather", "ReduceSum"} <= ops
    assert sum(op["share"] for op in profile["ops"]) == pytest.approx(1.0, abs=0.01)
