"""`python -m service.score --engine ray`: offline scoring on a Ray Data actor pool.

The one module that imports Ray (lazily, when `--engine ray` is asked for; the `ray` extra).
The same code runs on this machine (a Ray started here, `ray.init()`) and on a cluster
(`--ray-address` / `RAY_ADDRESS`):

- **read**: Ray Data read tasks run the scorer's own readers (`service.tables`: the same
  formats, line numbers and bad-record handling), one task per file, pinned to the driver's
  node, so the input only has to be where the command runs. They get one CPU of their own
  there, held by a placement group: an actor pool that took every CPU would leave the read
  nothing to run on, and the job would hang (a known Ray Data failure).
- **score**: `map_batches` with a callable class on a fixed actor pool, one `service.api.Model`
  per actor (the service's `Engine`, the bundle's normalisation, batching decision and
  rendering), ONNX Runtime's intra-op threads = the CPUs the actor reserves (`--threads`).
  The bundle travels through the object store and the `service` package as a runtime-env
  module, so the other nodes need only the project's dependencies, not its files.
- **write**: the driver takes the results in input order (`preserve_order`) and writes them
  with the scorer's writer, naming every skipped row by file and line as the local engine
  does; the summary adds the rows each node scored and the start-up time.

Nothing contacts an outside address: usage statistics off, no dashboard, a Ray started here
listens on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.api import Model
from service.bundle import MANIFEST, BundleError, load_bundle
from service.score import (
    Chunk,
    Progress,
    ScoreConfig,
    ScoreError,
    Sink,
    Summary,
    chunks,
    find_bundle,
)
from service.settings import Settings, available_cpus
from service.tables import Inputs, TableError, open_writer

NEEDS_RAY = "--engine ray needs Ray: pip install .[ray]"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
READ_CPUS = 1  # held on the driver's node for the read tasks
READY_TIMEOUT_S = 120.0  # for the read's CPU on the driver's node
NODE_ID = 8  # hex digits of a node's id shown in the summary


def import_ray(address: str | None = None) -> Any:
    """`ray` with Ray Data, or the one-line error naming the extra. A Ray of this machine
    alone (none named, or a loopback address) stays on 127.0.0.1: by default Ray swaps a
    loopback address for the machine's outward one, expecting other machines to join."""
    host = (address or "").split("://")[-1].rsplit(":", 1)[0].strip("[]")
    if not address or host in LOOPBACK:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read at `import ray`
    try:
        import ray
        import ray.data
    except ImportError:
        raise ScoreError(NEEDS_RAY) from None
    for handler in logging.getLogger("ray.data").handlers:  # its log file keeps every line;
        if handler.name == "console":  # a failure is reported by the scorer, in one line
            handler.setLevel(logging.CRITICAL)
    return ray


def plan_actors(cluster_cpus: float, threads: int, actors: int = 0) -> int:
    """Actors for a cluster of `cluster_cpus`: each reserves `threads` CPUs, one CPU is left
    to the read (0: as many as fit)."""
    fit = int((cluster_cpus - READ_CPUS) // threads)
    if actors:
        fit = min(fit, actors) if fit >= 1 else 0
    if fit < 1:
        raise ScoreError(f"the Ray cluster has {cluster_cpus:g} CPUs: one for reading and {threads} per actor (--threads) need {READ_CPUS + threads}")  # fmt: skip
    return fit


# ---------------------------------------------------------------------------- the actors


class ScoreActor:
    """One model per actor: the bundle's files from the object store, verified, loaded with
    `threads` ONNX Runtime threads; each batch of pickled records comes back with an outcome
    per record (its prediction, or why it was skipped) and this node's id."""

    def __init__(
        self, bundle: list[Any], view: str | None, threads: int, entities: bool, settings: Settings
    ) -> None:
        import ray

        files: dict[str, bytes] = ray.get(bundle[0])
        folder = Path(tempfile.mkdtemp(prefix="sentiment-bundle-"))
        try:
            for name, data in files.items():
                (folder / name).write_bytes(data)
            loaded = load_bundle(folder, verify=True)
            self.model = Model.from_bundle(loaded, view, threads=threads, settings=settings)
        finally:  # the session and tokenizer are in memory now
            shutil.rmtree(folder, ignore_errors=True)
        self.entities = entities
        self.node = ray.get_runtime_context().get_node_id()[:NODE_ID]

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        records = [pickle.loads(blob) for blob in batch.column("record").to_pylist()]
        outcomes = Chunk.start(self.model, records, self.entities, None).outcomes(self.model)
        return pa.table(
            {
                "record": batch.column("record"),
                "outcome": pa.array([pickle.dumps(o) for o in outcomes], pa.binary()),
                "node": pa.array([self.node] * len(records), pa.string()),
                "seen": batch.column("seen"),
            }
        )


def read_file(inputs: Inputs, path: Path, rows: int) -> Iterator[Any]:
    """A read task: one file's records, pickled, `rows` per block, with how far the read
    got (the driver's progress)."""
    import pyarrow as pa

    for chunk in chunks(inputs.read(path), rows):
        blobs = pa.array([pickle.dumps(record) for record in chunk], pa.binary())
        seen = pa.array([inputs.before[path] + _read(inputs)] * len(chunk), pa.int64())
        yield pa.table({"record": blobs, "seen": seen})


def _read(inputs: Inputs) -> int:
    return 0 if inputs.current is None else inputs.current.bytes_read


def datasource(inputs: Inputs, rows: int) -> Any:
    """A Ray Data datasource of one read task per file, in file order."""
    from functools import partial

    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class Records(Datasource):
        def get_name(self) -> str:
            return "Records"

        def estimate_inmemory_data_size(self) -> int:
            return inputs.size

        def get_read_tasks(self, parallelism: int, *args: Any, **kwargs: Any) -> list[Any]:
            return [
                ReadTask(
                    partial(read_file, inputs, path, rows),
                    BlockMetadata(None, path.stat().st_size, None, input_files=(str(path),)),
                )
                for path in inputs.paths
            ]

    return Records()  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------------------- the driver


class Cluster:
    """Ray for one run: joined (an address) or started here (this machine's cores, plus the
    read's logical CPU), and shut down after the run only if this run started it."""

    def __init__(self, ray: Any, address: str | None) -> None:
        self.ray = ray
        self.started = not ray.is_initialized()
        if not self.started:
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no report to an outside host
        options: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": False,
        }
        if address:
            import service

            # The driver's `service` package, shipped: every node runs this very code (here,
            # workers import it from where the driver does; shipping would cost ~3 s).
            py_modules = [str(Path(service.__file__).parent)]
            ray.init(address=address, runtime_env={"py_modules": py_modules}, **options)
        else:
            # The read's CPU on top of the cores: it parses far faster than the model scores
            # (CSV, 256 rows, ~0.1 of one actor's batch time), so every core gets an actor.
            ray.init(num_cpus=available_cpus() + READ_CPUS, _node_ip_address="127.0.0.1", **options)  # fmt: skip

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def score_ray(config: ScoreConfig, inputs: Inputs) -> Summary:
    """Score `inputs` on a Ray Data actor pool into `config.output` (see the module doc)."""
    address = config.ray_address or os.environ.get("RAY_ADDRESS")
    ray = import_ray(address)
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    summary = Summary()
    bundle, view = find_bundle(config)
    labels = bundle.views[view] if view is not None else bundle.labels
    inputs.head()  # a bad column stops the run before Ray starts
    files = {name: (bundle.path / name).read_bytes() for name in [MANIFEST, *bundle.manifest["files"]]}  # fmt: skip
    cluster = Cluster(ray, address)
    reading = None
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # rows out in input order
        context.enable_progress_bars = False  # ours counts rows written
        context.enable_auto_log_stats = False
        node = ray.get_runtime_context().get_node_id()
        reading = placement_group([{"CPU": READ_CPUS}], bundle_label_selector=[{"ray.io/node-id": node}])  # fmt: skip
        ray.get(reading.ready(), timeout=READY_TIMEOUT_S)
        actors = plan_actors(ray.cluster_resources().get("CPU", 0), config.threads, config.actors)
        with warnings.catch_warnings():  # 2.60 names no parameter for a placement group yet
            warnings.simplefilter("ignore", DeprecationWarning)
            read = ray.data.read_datasource(
                datasource(inputs, config.chunk_rows),
                ray_remote_args={"scheduling_strategy": PlacementGroupSchedulingStrategy(reading)},
            )
        dataset = read.map_batches(
            ScoreActor,
            fn_constructor_kwargs={
                "bundle": [ray.put(files)],
                "view": view,
                "threads": config.threads,
                "entities": bundle.text_pair and config.entity_col is not None,
                "settings": config.service,
            },
            batch_size=config.chunk_rows,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=config.threads,
        )
        return _write(config, inputs, labels, dataset, summary)
    except ray.exceptions.GetTimeoutError:
        raise ScoreError(f"no CPU of this node free for the read within {READY_TIMEOUT_S:g} s: run the command on a node whose Ray has a CPU to spare") from None  # fmt: skip
    except ray.exceptions.RayError as exc:  # a bad record or file found by a task: its line
        raise _cause(exc) from None
    finally:
        if reading is not None:
            remove_placement_group(reading)
        cluster.close()


def _cause(exc: BaseException) -> BaseException:
    """The scorer's own error (a bad file or record, a bundle that fails its manifest) inside
    a Ray task's failure, reported as the local engine reports it; else the failure itself."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        found = todo.pop()
        if found is None or id(found) in seen:
            continue
        seen.add(id(found))
        if type(found) in (TableError, ScoreError, BundleError):  # Ray Data appends to its text
            return type(found)(str(found).splitlines()[0])
        todo += [found.__cause__, found.__context__, getattr(found, "cause", None)]
    return exc


class _Seen:
    """The driver's view of how far the read got: the progress line's ETA."""

    def __init__(self, size: int) -> None:
        self.size, self.bytes_read = size, 0


def _write(
    config: ScoreConfig, inputs: Inputs, labels: tuple[str, ...], dataset: Any, summary: Summary
) -> Summary:
    """Take the results in input order; write them with the scorer's writer."""
    writer = open_writer(config.output, inputs.fmt, labels, config.header)
    seen = _Seen(inputs.size)
    sink = Sink(writer, Progress(seen, config.progress), summary)
    try:
        writer.start(inputs.columns, inputs.schema)
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            if summary.startup_s is None:
                summary.startup_s = time.perf_counter() - summary.start
            columns = [batch.column(name).to_pylist() for name in ("record", "outcome", "node")]
            for record, blob, node in zip(*columns, strict=True):
                outcome = pickle.loads(blob)
                sink.take(pickle.loads(record), outcome)
                summary.nodes[node] += 0 if isinstance(outcome, str) else 1
            seen.bytes_read = max(seen.bytes_read, batch.column("seen")[-1].as_py())
            sink.progress.update(summary.rows)
        sink.progress.done()
        return summary
    finally:
        writer.close()
