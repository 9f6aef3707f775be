"""The HTTP part of `python -m benchmarks`: which servers run (ours alone or beside its `--pair`
variant, then the peers that can be built here), each started, measured and stopped through
http.py and paired.py; a server that cannot run is a note, not a failed run."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks import http, paired
from benchmarks.peers.optimum_ort import (
    optimize_and_quantize,
    peer_deps_missing,
    prepare_model_dir,
)
from benchmarks.peers.pretrained import BUILT_FROM, export_packaged
from benchmarks.ports import free_port
from benchmarks.server_process import Server, ServerError, python_module


def run_http(
    args: argparse.Namespace,
    bundle: Any,
    texts: list[str],
    entities: list[str] | None,
    after_ours: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Ours (alone, or beside its `--pair` variant), then `after_ours` (the engine measured
    again), then the peers (unless `--skip-peers`): their rows, and a note for each server
    that could not run."""
    notes: list[str] = []
    servers: list[dict[str, Any]] = []
    plan = http_plan(args, texts, entities)
    port = free_port()
    if importlib.util.find_spec("service.__main__") is None:
        notes.append("our service skipped: `python -m service` does not exist in this tree yet")
    elif args.pair == "none":
        print("http: ours")
        profile = args.py_spy in ("all", "ours")
        servers.append(ours_alone(ours_env(args, bundle, port), plan, profile))
    else:
        servers += run_pair(args, ours_env(args, bundle, port), plan, notes)
    if after_ours is not None:
        after_ours()
    if not args.skip_peers:  # no API key; the entities go to the peers that serve our model
        peer_plan = replace(plan, headers=None)
        ours = paired.Config("ours", ours_env(args, bundle, free_port(avoid=port)))
        peers = Peers(bundle, peer_plan, port, args.py_spy == "all", notes, (ours, plan))
        servers += peers.run(args)
    for note in notes:
        print(f"  note: {note}")
    return {"servers": servers, "notes": notes}


def run_ours(
    args: argparse.Namespace, bundle: Any, texts: list[str], entities: list[str] | None
) -> dict[str, Any]:
    """A further workload's HTTP part: ours alone over the same levels, on its texts (no pair,
    no peers, no profile: only what its HTTP / engine-alone ratio needs)."""
    print("http: ours")
    plan = http_plan(args, texts, entities)
    row = ours_alone(ours_env(args, bundle, free_port()), plan, profile=False)
    return {"servers": [row], "notes": []}


def http_plan(args: argparse.Namespace, texts: list[str], entities: list[str] | None) -> http.Plan:
    """The levels, timing and requests every server of a workload is measured with."""
    return http.Plan(
        texts, args.levels, args.warmup, args.duration, args.timeout,
        headers={"Authorization": f"Bearer {args.api_key}"} if args.api_key else None,
        entities=entities, cpus=args.server_cpus,
    )  # fmt: skip


def ours_env(args: argparse.Namespace, bundle: Any, port: int) -> dict[str, str]:
    """Our service's environment: the defaults a user gets (access log on, info level);
    --service-env changes them, and the report's settings line says so."""
    env = {
        "SENTIMENT_BUNDLE": str(bundle.path),
        "SENTIMENT_HOST": "127.0.0.1",
        "SENTIMENT_PORT": str(port),
        **dict(item.split("=", 1) for item in args.service_env),
    }
    if args.api_key:
        env.setdefault("SENTIMENT_API_KEY", args.api_key)
    return env


def ours_alone(env: dict[str, str], plan: http.Plan, profile: bool) -> dict[str, Any]:
    """Our service's levels, measured alone (`profile`: the extra py-spy run)."""
    port = int(env["SENTIMENT_PORT"])
    row = http.bench_server("ours", python_module("service"), env, port, plan, profile=profile)
    return {**row, "ours": True}


def run_pair(
    args: argparse.Namespace,
    env: dict[str, str],
    plan: http.Plan,
    notes: list[str],
) -> list[dict[str, Any]]:
    """Ours and ours with `--pair` set, measured in turns (benchmarks/paired.py)."""
    key, _, value = args.pair.partition("=")
    ports = (int(env["SENTIMENT_PORT"]), free_port(avoid=int(env["SENTIMENT_PORT"])))
    configs = (
        paired.Config("ours", env),
        paired.Config(f"ours, {args.pair}", {**env, key: value, "SENTIMENT_PORT": str(ports[1])}),
    )
    print(f"http: ours and ours with {args.pair}, in turns")
    argv = python_module("service")
    try:
        rows = paired.bench_pair(
            argv, configs, ports, plan, rounds=2 if args.quick else paired.ROUNDS
        )
    except ServerError as exc:
        notes.append(f"our service skipped: it failed to start: {exc}")
        return []
    if args.py_spy in ("all", "ours") and plan.levels:
        ours = functools.partial(Server, "ours", argv, ports[0], env, cpus=plan.cpus)
        rows[0] |= http.profile_runs(ours, plan, log=lambda line: print(f"  ours {line}"))
    return [{**row, "ours": True} for row in rows]


@dataclass
class Peers:
    """The peers that can be built here, each measured on `port` with `plan` (no API key); one
    that cannot be built or started is a note, not a row. The seed reads the text alone, as
    its API did; the optimum peers serve our trained graph (or the pretrained weights) with
    its input contract, so they get the entities too and normalise as the bundle declares."""

    bundle: Any
    plan: http.Plan
    port: int
    profile: bool  # an extra py-spy run per peer (`--py-spy all`)
    notes: list[str]
    # Ours (its config and plan), measured at one user in turns with the strongest peer.
    ours: tuple[paired.Config, http.Plan] | None = None

    def run(self, args: argparse.Namespace) -> list[dict[str, Any]]:
        """seed-tf on `--checkpoint`, then the optimum peers on `--optimum-model`, else on the
        trained fp32 graph (`optimum_default`), else on the packaged pretrained weights."""
        servers = self.seed_tf(args.checkpoint)
        if args.optimum_model:
            graph, built_from = args.optimum_model, f"--optimum-model {args.optimum_model}"
        else:
            graph = optimum_default(args.fp32_model)
            built_from = f"trained fp32 graph {graph}"
        return servers + self.optimum(graph, args.checkpoint, built_from)

    def seed_tf(self, checkpoint: Path) -> list[dict[str, Any]]:
        """The seed's architecture on the project's TF checkpoint (benchmarks.peers.seed_tf)."""
        if not (checkpoint / "tf_model.h5").is_file():
            self.notes.append(f"seed-TF peer skipped: no TF checkpoint at {checkpoint}")
            return []
        if importlib.util.find_spec("tensorflow") is None:
            self.notes.append(
                "seed-TF peer skipped: tensorflow is not installed (the `train` extra)"
            )
            return []
        print("http: peer seed-tf")
        argv = python_module(
            "benchmarks.peers.seed_tf", "--checkpoint", str(checkpoint), "--port", str(self.port)
        )
        what = "TF DistilBERT checkpoint, eager call per request in an async handler"
        return [self.measure("seed-tf", argv, what, replace(self.plan, entities=None))]

    def optimum(
        self, onnx_model: Path | None, checkpoint: Path, built_from: str
    ) -> list[dict[str, Any]]:
        """optimum's ORTModel + pipeline on `onnx_model` (`built_from` says what it is; with the
        checkpoint's config when there is one), or on optimum's export of the packaged
        pretrained weights when None; then the same graph optimized and quantized
        (`optimized`). Each row records what it was built from."""
        missing = peer_deps_missing()
        if missing:
            self.notes.append(f"optimum peer skipped: {missing}")
            return []
        if onnx_model is not None and not onnx_model.is_file():
            self.notes.append(f"optimum peer skipped: {onnx_model} not found")
            return []
        scratch = Path(tempfile.mkdtemp(prefix="bench-optimum-"))
        try:  # every graph built lands beside `folder`, in `scratch`, and goes with the run
            return self.optimum_in(scratch / "model", onnx_model, checkpoint, built_from)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def optimum_in(
        self, folder: Path, onnx_model: Path | None, checkpoint: Path, built_from: str
    ) -> list[dict[str, Any]]:
        """`optimum`'s peers, built in `folder` and beside it."""
        config = checkpoint if checkpoint.is_dir() else None
        if onnx_model is None:
            export = self.pretrained(folder.with_name(folder.name + "-export"))
            if export is None:
                return []
            onnx_model, config, built_from = export / "model.onnx", export, BUILT_FROM
        labels = list(self.bundle.labels)
        prepare_model_dir(onnx_model, self.bundle.tokenizer_path, labels, config, folder)
        print(f"http: peer optimum-ort (built from {built_from})")
        what = f"optimum ORTModelForSequenceClassification + pipeline on {onnx_model}"
        plain = self.optimum_server("optimum-ort", folder, what)
        return [{**row, "built_from": built_from} for row in [plain, *self.optimized(folder)]]

    def pretrained(self, out: Path) -> Path | None:
        """optimum's export of the packaged pretrained weights into `out` (benchmarks.peers.
        pretrained), or None with a note when it cannot be built."""
        print("http: exporting the packaged pretrained weights for the optimum peers")
        try:
            return export_packaged(list(self.bundle.labels), self.bundle.tokenizer_path, out)
        except Exception as exc:  # no weights, no export: a note, not a dead run
            self.notes.append(f"optimum peer skipped: exporting the pretrained weights: {exc}")
            return None

    def optimized(self, folder: Path) -> list[dict[str, Any]]:
        """The strongest peer: the same graph through optimum's ORTOptimizer (O3) and
        ORTQuantizer (AVX-512 VNNI dynamic int8), behind the same handler as the plain one."""
        out = folder.with_name(folder.name + "-o3-int8")
        try:
            recipe = optimize_and_quantize(folder, out, level="O3")
        except Exception as exc:  # a peer that cannot be built is a skipped row, not a dead run
            self.notes.append(f"optimum O3 + int8 peer skipped: building it failed: {exc}")
            return []
        print(f"http: peer optimum-o3-int8 ({recipe['ops']})")
        what = (
            "optimum ORTOptimizer O3 + ORTQuantizer avx512_vnni dynamic int8 "
            f"(per-channel) of the same graph, ORTModel + pipeline; ops {recipe['ops']}"
        )
        row = self.optimum_server("optimum-o3-int8", out, what)
        return [row | self.one_user_in_turns("optimum-o3-int8", out)]

    def one_user_in_turns(self, name: str, model_dir: Path) -> dict[str, Any]:
        """Ours and this peer at one user, both up, in turns (benchmarks/paired.py): the VM's
        speed drifts within minutes by more than the two differ, so their one-user rows,
        measured minutes apart, mostly compare the drift."""
        if self.ours is None or 1 not in self.plan.levels:
            return {}
        ours, plan = self.ours
        peer = paired.Config(name, {}, argv=tuple(self.optimum_argv(model_dir)), observed=False)
        ports = (int(ours.env["SENTIMENT_PORT"]), self.port)
        print(f"http: ours and {name} at one user, in turns")
        ours_argv = python_module("service")
        try:
            rows = paired.bench_pair(ours_argv, (ours, peer), ports, replace(plan, levels=[1]))
        except ServerError as exc:
            self.notes.append(f"ours beside {name} at one user skipped: {exc}")
            return {}
        (mine,), (theirs,) = rows[0]["levels"], rows[1]["levels"]
        return {
            "one_user_in_turns": {
                "ours_p50_ms": mine["p50_ms"],
                "p50_ms": theirs["p50_ms"],
                "errors": mine["errors"] + theirs["errors"],
                "rounds": len(theirs["rounds"]),
                "ours_vs_this_by_round": theirs["ours_vs_this_by_round"],
            }
        }

    def optimum_server(self, name: str, model_dir: Path, what: str) -> dict[str, Any]:
        """One optimum peer (benchmarks.peers.optimum_ort) on `model_dir`, measured."""
        reads = []  # the plan carries entities only for an entity-pair bundle (texts.py)
        if self.bundle.preprocess:
            reads.append(f"{self.bundle.preprocess} normalised")
        if self.plan.entities:
            reads.append("(entity, text) pairs")
        what = f"{what}; reads {', '.join(reads) or 'the raw text'}"
        return self.measure(name, self.optimum_argv(model_dir), what, self.plan)

    def optimum_argv(self, model_dir: Path) -> list[str]:
        """`python -m benchmarks.peers.optimum_ort` on `model_dir`, with the bundle's contract."""
        bundle = self.bundle
        return python_module(
            "benchmarks.peers.optimum_ort",
            "--model-dir", str(model_dir),
            "--max-length", str(bundle.max_length),
            "--port", str(self.port),
            *(["--preprocess", bundle.preprocess] if bundle.preprocess else []),
            *(["--text-pair"] if bundle.text_pair else []),
        )  # fmt: skip

    def measure(self, name: str, argv: list[str], what: str, plan: http.Plan) -> dict[str, Any]:
        """A peer's levels on `plan`, with what it is."""
        levels = http.bench_server(name, argv, {}, self.port, plan, profile=self.profile)
        return {**levels, "what": what}


def optimum_default(fp32_model: Path) -> Path | None:
    """The trained graph a user's optimum export would resemble most: fp32 and not fused on
    disk (ORT applies its own runtime optimizations at session start, as it would for them);
    None when training left none (a fresh clone: the peers are built from the packaged
    pretrained weights instead, never from our int8 graph, which optimum cannot feed)."""
    for candidate in (fp32_model.with_name("model.fp32.rewritten.onnx"), fp32_model):
        if candidate.is_file():
            return candidate
    return None
