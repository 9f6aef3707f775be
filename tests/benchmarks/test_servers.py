"""Which servers `python -m benchmarks` measures, and with what: the measuring replaced by
recorders (no process is started)."""

import importlib.util
import tempfile
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
    assert peers.optimum(missing, tmp_path, "a graph") == []
    assert peers.notes == [
        f"seed-TF peer skipped: no TF checkpoint at {tmp_path / 'no-checkpoint'}",
        f"optimum peer skipped: {missing} not found",
    ]
    assert measured == []


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[Path, bytes]]:
    """The optimum peers' building replaced by recorders: the graph each peer was served, and
    its bytes (no torch, no optimum, no process); scratch folders in `tmp_path`."""
    served: list[tuple[Path, bytes]] = []
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    monkeypatch.setattr(servers, "peer_deps_missing", lambda: None)

    def export(labels: list[str], tokenizer: Path, out: Path) -> Path:
        out.mkdir(parents=True)
        (out / "model.onnx").write_bytes(b"exported")
        (out / "config.json").write_text('{"model_type": "distilbert"}')
        return out

    def optimize(folder: Path, out: Path, level: str) -> dict[str, Any]:
        return {"ops": {"QAttention": 1}}

    def server(self: servers.Peers, name: str, model_dir: Path, what: str) -> dict[str, Any]:
        graph = (model_dir / "model.onnx").resolve()
        served.append((graph, graph.read_bytes() if graph.is_file() else b""))
        return {"name": name, "levels": [], "what": what}

    monkeypatch.setattr(servers, "export_packaged", export)
    monkeypatch.setattr(servers, "optimize_and_quantize", optimize)
    monkeypatch.setattr(servers.Peers, "optimum_server", server)
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "tokenizer.json").write_text("{}")
    return served


def peer_rows(tmp_path: Path, *flags: str) -> tuple[list[dict[str, Any]], list[str]]:
    args = parse_args(["--bundle", str(tmp_path / "bundle"), "--checkpoint", str(tmp_path), *flags])
    peers = servers.Peers(bundle(tmp_path), http.Plan(["a"], [1], 0.1, 0.1, 1.0), 8000, False, [])
    return peers.run(args), peers.notes


def test_without_a_trained_graph_the_optimum_peers_use_the_pretrained_export(
    tmp_path: Path, built: list[tuple[Path, bytes]]
) -> None:
    rows, notes = peer_rows(tmp_path, "--fp32-model", str(tmp_path / "none.onnx"))
    assert [r["name"] for r in rows] == ["optimum-ort", "optimum-o3-int8"]
    assert all(r["built_from"] == servers.BUILT_FROM for r in rows)
    assert "head untrained" in servers.BUILT_FROM
    graph, content = built[0]
    assert content == b"exported" and graph.parent.name.endswith("-export")  # not our int8
    assert notes == ["seed-TF peer skipped: no TF checkpoint at " + str(tmp_path)]
    assert list((tmp_path / "scratch").iterdir()) == []  # the graphs built go with the run


def test_the_trained_fp32_graph_is_preferred(
    tmp_path: Path, built: list[tuple[Path, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "export_packaged", lambda *a: pytest.fail("exported"))
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    for name in ("model.fp32.fused.onnx", "model.fp32.rewritten.onnx"):
        (onnx_dir / name).write_bytes(name.encode())
    fused = onnx_dir / "model.fp32.fused.onnx"
    rows, _ = peer_rows(tmp_path, "--fp32-model", str(fused))
    rewritten = onnx_dir / "model.fp32.rewritten.onnx"
    assert [r["built_from"] for r in rows] == [f"trained fp32 graph {rewritten}"] * 2
    assert built[0] == (rewritten.resolve(), b"model.fp32.rewritten.onnx")
    assert servers.optimum_default(fused) == rewritten
    rewritten.unlink()
    assert servers.optimum_default(fused) == fused
    fused.unlink()
    assert servers.optimum_default(fused) is None
    rows, _ = peer_rows(tmp_path, "--optimum-model", str(tmp_path / "bundle" / "tokenizer.json"))
    assert rows[0]["built_from"].startswith("--optimum-model ")


def test_the_strongest_peer_is_measured_beside_ours_at_one_user_in_turns(
    tmp_path: Path, built: list[tuple[Path, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def bench_pair(argv: list[str], configs: Any, ports: Any, plan: http.Plan) -> list[Any]:
        calls.append({"argv": argv, "configs": configs, "ports": ports, "plan": plan})
        ratio = {"p50_median": 0.97, "p50_min": 0.9, "p50_max": 1.1}
        ours = {"p50_ms": 2.5, "errors": 0, "rounds": [{}] * 4}
        return [
            {"levels": [ours]},
            {"levels": [{**ours, "p50_ms": 2.7, "ours_vs_this_by_round": ratio}]},
        ]

    monkeypatch.setattr(servers.paired, "bench_pair", bench_pair)
    args = parse_args(["--bundle", str(tmp_path / "bundle"), "--checkpoint", str(tmp_path)])
    ours = servers.paired.Config("ours", {"SENTIMENT_PORT": "8001"})
    plan = http.Plan(["a"], [1, 500], 0.1, 0.1, 1.0, headers={"Authorization": "Bearer k"})
    contract = {"preprocess": "tweet-1", "text_pair": True}
    the_bundle = SimpleNamespace(**(vars(bundle(tmp_path)) | contract))
    peers = servers.Peers(the_bundle, plan, 8000, False, [], (ours, plan))
    plain, strongest = peers.run(args)
    assert "one_user_in_turns" not in plain
    assert strongest["one_user_in_turns"] == {
        "ours_p50_ms": 2.5, "p50_ms": 2.7, "errors": 0, "rounds": 4,
        "ours_vs_this_by_round": {"p50_median": 0.97, "p50_min": 0.9, "p50_max": 1.1},
    }  # fmt: skip
    (call,) = calls
    assert call["argv"][-2:] == ["-m", "service"]  # ours runs as itself
    mine, peer = call["configs"]
    assert mine is ours and peer.observed is False and "benchmarks.peers.optimum_ort" in peer.argv
    assert list(peer.argv[peer.argv.index("--preprocess") :][:2]) == ["--preprocess", "tweet-1"]
    assert call["ports"] == (8001, 8000) and call["plan"].levels == [1]
    assert call["plan"].headers == plan.headers  # ours' plan: an API key reaches ours
