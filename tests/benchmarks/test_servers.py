"""Which servers `python -m benchmarks` measures, and with what: the measuring replaced by
recorders (no process is started)."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks import http, servers
from benchmarks.cli import parse_args


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every bench_server call, answered with an empty result."""
    calls: list[dict[str, Any]] = []

    def bench_server(
        name: str, argv: list[str], env: dict[str, str], port: int, plan: http.Plan, **kw: Any
    ) -> dict[str, Any]:
        calls.append({"name": name, "argv": argv, "env": env, "plan": plan, **kw})
        return {"name": name, "argv": argv, "levels": []}

    monkeypatch.setattr(http, "bench_server", bench_server)
    return calls


def bundle(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(
        path=tmp_path / "bundle",
        model_path=tmp_path / "bundle" / "model.onnx",
        tokenizer_path=tmp_path / "bundle" / "tokenizer.json",
        labels=("negative", "positive"),
        max_length=128,
    )


def test_ours_gets_the_key_and_entities_and_the_peers_neither(
    tmp_path: Path, measured: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "tf_model.h5").write_bytes(b"")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: object() if name == "tensorflow" else find_spec(name),
    )
    monkeypatch.setattr(servers, "peer_deps_missing", lambda: "optimum is not installed")
    args = parse_args([
        "--bundle", str(tmp_path / "bundle"), "--pair", "none", "--api-key", "k",
        "--levels", "1,8", "--checkpoint", str(checkpoint), "--py-spy", "ours",
    ])  # fmt: skip
    out = servers.run_http(args, bundle(tmp_path), ["a", "b"], ["x", "y"])
    assert [s["name"] for s in out["servers"]] == ["ours", "seed-tf"]
    assert out["servers"][0]["ours"] is True and "TF DistilBERT" in out["servers"][1]["what"]
    assert out["notes"] == ["optimum peer skipped: optimum is not installed"]
    ours, seed = measured
    assert ours["plan"].headers == {"Authorization": "Bearer k"}
    assert ours["plan"].entities == ["x", "y"] and ours["profile"] is True
    assert ours["env"]["SENTIMENT_API_KEY"] == "k"
    assert seed["plan"].headers is None and seed["plan"].entities is None
    assert seed["plan"].texts == ["a", "b"] and list(seed["plan"].levels) == [1, 8]
    assert seed["profile"] is False and seed["env"] == {}


def test_a_peer_that_cannot_run_is_a_note(
    tmp_path: Path, measured: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "peer_deps_missing", lambda: None)
    missing = tmp_path / "missing.onnx"
    peers = servers.Peers(
        bundle(tmp_path), http.Plan(["a"], [1], 0.1, 0.1, 1.0), 8000, profile=False, notes=[]
    )
    assert peers.seed_tf(tmp_path / "no-checkpoint") == []
    assert peers.optimum(missing, tmp_path) == []
    assert peers.notes == [
        f"seed-TF peer skipped: no TF checkpoint at {tmp_path / 'no-checkpoint'}",
        f"optimum peer skipped: {missing} not found",
    ]
    assert measured == []
