"""The in-process Python API: load a model by name or folder, predict on texts (and entities).

    from service import load
    model = load("sentiment-3class")          # a name under models/, a view's name, or a folder
    model.predict(["the servers are down again"], entities=["Overwatch"])
    # [Prediction(label='Negative', score=0.97..., scores={...}, truncated=False)]

The answers are the HTTP API's: the same verified bundle and `Engine` (the bundle's text
normalisation included), the same batching decision (a bundle whose answers depend on
batch-mates runs one text per `session.run`), the same view projection and the same rendering
(6 decimals). One source for all three callers: the service builds its models with
`Model.from_bundle` (registry.py), the offline scorer and the Ray actors score through
`Model.start` / `Model.finish` (score.py, score_ray.py). A `Model` is safe to share between
threads: it holds no per-call state, and ONNX Runtime sessions and tokenizers may be called
concurrently.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from service.bundle import Bundle, BundleError, load_bundle
from service.engine import Encoded, EncodeError, Engine, Probs, project, view_columns
from service.payload import render
from service.scheduler import plan
from service.schema import MAX_ENTITY_CHARS
from service.settings import DEFAULT_BUNDLE, Settings, available_cpus

log = logging.getLogger("service")
MODELS = Path("models")
CHUNK_ROWS = 256  # texts tokenized and dispatched together (memory ~ two chunks in flight)
Batch = tuple[list[int], "Future[Probs] | None"]  # rows of a chunk; None: run when finished


class InputError(ValueError):
    """A text or entity the model cannot read; the message names which one and why."""


class InputTypeError(InputError, TypeError):
    """A text or entity of the wrong type (also a TypeError)."""


class UnknownModel(LookupError):
    """No bundle folder and no model under models/ by that name (the message lists them)."""

    def __str__(self) -> str:  # LookupError would show the repr of its argument
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class Prediction:
    """One text's answer: the top label and its score, every label's score, and whether the
    text was cut to the model's max length."""

    label: str
    score: float
    scores: dict[str, float]
    truncated: bool

    def to_dict(self) -> dict[str, Any]:
        """The HTTP API's prediction object (without `model`)."""
        return {"label": self.label, "score": self.score, "scores": dict(self.scores),
                "truncated": self.truncated}  # fmt: skip


def text_problem(text: Any, entity: Any) -> str | None:
    """Why the API would refuse this text or entity (None: fine). An entity of None or ""
    is no entity. The one rule for the Python API, the scorer and the Ray actors."""
    if not isinstance(text, str):
        return "no text" if text is None else f"text is not a string ({type(text).__name__})"
    if not text or text.isspace():
        return "empty text"
    if _undecodable(text) or (isinstance(entity, str) and _undecodable(entity)):
        return "undecodable bytes (not UTF-8)"
    if entity is not None and not isinstance(entity, str):
        return f"entity is not a string ({type(entity).__name__})"
    if isinstance(entity, str) and len(entity) > MAX_ENTITY_CHARS:
        return f"entity longer than {MAX_ENTITY_CHARS} characters"
    return None


def _undecodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def effective_max_batch(settings: Settings, name: str, drift: float) -> int:
    """1 when batching would change this model's answers by more than the tolerance (the
    service, the scorer and the Python API decide alike)."""
    if drift <= settings.batch_tolerance or settings.max_batch == 1:
        return settings.max_batch
    log.warning(
        "batching changes model %s's answers (max |dprob| %.3g > %.3g, e.g. dynamic int8 "
        "scales per batch): every text runs alone. Set SENTIMENT_BATCH_TOLERANCE to accept "
        "the drift, or export a batch-invariant model.",
        name,
        drift,
        settings.batch_tolerance,
    )
    return 1


def resolve_bundle(value: str | Path, models: Path = MODELS) -> tuple[Path, str | None]:
    """A bundle folder, or a name under models/ (a folder, a model name or one of a bundle's
    views), and the view it names (None: the model itself)."""
    path = Path(value)
    if (path / "manifest.json").is_file():
        return path, None
    found = sorted(p.parent for p in models.glob("*/manifest.json"))
    for folder in found:
        names = _model_names(folder)
        if folder.name == str(value) or names[:1] == [str(value)]:
            return folder, None
        if str(value) in names:
            return folder, str(value)
    known = ", ".join(n for folder in found for n in _model_names(folder) or [folder.name])
    raise UnknownModel(f"model {str(value)!r}: not a bundle folder, nor a model under {models}/ ({known or 'none'})")  # fmt: skip


def _model_names(folder: Path) -> list[str]:
    """The bundle's model name, then its views' names ([] for an unreadable bundle)."""
    try:
        bundle = load_bundle(folder, verify=False)
    except BundleError:
        return []
    return [bundle.model_name, *bundle.views]


@dataclass
class Pending:
    """A chunk on its way: its encodings, which of its rows they are, the rows that could not
    be encoded (index -> why), and its batches."""

    encoded: list[Encoded]
    kept: list[int]
    problems: dict[int, str]
    batches: list[Batch]


@dataclass(frozen=True)
class Model:
    """One model name (a bundle, or one of its views) ready to predict in this process."""

    name: str
    bundle: Bundle
    engine: Engine
    max_batch: int  # 1 when batching would change this model's answers
    max_tokens: int
    batch_drift: float
    labels: tuple[str, ...]  # the bundle's, or its view's
    columns: tuple[int, ...] | None = None  # a view: the bundle's label columns it keeps
    workers: int = 1  # concurrent runs for a long `predict` (its own thread pool)
    _pool: list[ThreadPoolExecutor] = field(default_factory=list, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        view: str | None = None,
        *,
        threads: int = 1,
        workers: int = 1,
        settings: Settings | None = None,
        spin: bool = False,
        idle_threads: int = 1,
    ) -> Model:
        """The engine of a verified bundle, with the service's batching decision (its
        answers must not depend on batch-mates, else every text runs alone)."""
        settings = settings or Settings(warmup=False, access_log=False)
        engine = Engine(bundle, threads=threads, spin=spin, idle_threads=idle_threads)
        drift = engine.batch_drift()
        max_batch = effective_max_batch(settings, bundle.model_name, drift)
        model = cls(bundle.model_name, bundle, engine, max_batch, settings.max_tokens, drift,
                    bundle.labels, workers=max(1, workers))  # fmt: skip
        return model if view is None else model.view(view)

    # -------------------------------------------------------------------------- names

    @property
    def text_pair(self) -> bool:
        """The model reads an entity with each text."""
        return self.bundle.text_pair

    @property
    def view_of(self) -> str | None:
        """The bundle's own name when this name is one of its views."""
        return None if self.columns is None else self.bundle.model_name

    def view(self, name: str) -> Model:
        """One of the bundle's views: the same engine, a subset of the labels."""
        labels = self.bundle.views[name]
        columns = view_columns(self.bundle.labels, labels)
        return replace(self, name=name, labels=labels, columns=columns)

    def views(self) -> list[Model]:
        return [self.view(name) for name in self.bundle.views]

    # -------------------------------------------------------------------- the steps

    def scores(self, probs: Probs) -> Probs:
        """The bundle's probabilities as this name answers them."""
        return probs if self.columns is None else project(probs, self.columns)

    def render(self, probs: Probs, encoded: list[Encoded]) -> list[dict[str, Any]]:
        """The HTTP API's prediction objects for the bundle's probabilities."""
        return render(self.labels, self.scores(probs), encoded)

    def encode(
        self, texts: Sequence[str], entities: Sequence[str | None] | None = None
    ) -> tuple[list[Encoded], list[int], dict[int, str]]:
        """Token ids of the texts that can be read, their indices, and why the others cannot
        (an entity that leaves its text no room): the batch call, row by row if it fails.
        An entity of None or "" is no entity (a text-pair model then reads an empty one)."""
        pairs = None if entities is None or not self.text_pair else [e or "" for e in entities]
        try:
            return self.engine.encode(texts, pairs), list(range(len(texts))), {}
        except EncodeError:
            encoded, kept, problems = [], [], {}
            for i, text in enumerate(texts):
                try:
                    encoded += self.engine.encode([text], None if pairs is None else [pairs[i]])
                    kept.append(i)
                except EncodeError as exc:
                    problems[i] = str(exc)
            return encoded, kept, problems

    def start(
        self,
        texts: Sequence[str],
        entities: Sequence[str | None] | None = None,
        executor: Executor | None = None,
    ) -> Pending:
        """Encode a chunk and hand its batches (by length, as the service cuts them) to
        `executor`; without one they run in `finish`."""
        encoded, kept, problems = self.encode(texts, entities)
        groups = plan([len(e.ids) for e in encoded], self.max_batch, self.max_tokens)
        batches: list[Batch] = [
            (g, None if executor is None else executor.submit(self._infer, encoded, g))
            for g in groups
        ]
        return Pending(encoded, kept, problems, batches)

    def finish(self, pending: Pending) -> list[dict[str, Any]]:
        """The predictions of a chunk's readable rows (`pending.kept`), in order."""
        if not pending.encoded:
            return []
        probs: Probs = np.empty((len(pending.encoded), len(self.engine.labels)), np.float32)
        for rows, future in pending.batches:
            probs[rows] = self._infer(pending.encoded, rows) if future is None else future.result()
        return self.render(probs, pending.encoded)

    def _infer(self, encoded: list[Encoded], rows: list[int]) -> Probs:
        return self.engine.infer([encoded[i].ids for i in rows])

    # -------------------------------------------------------------------- the API

    def check(self, texts: Sequence[str], entities: Sequence[str | None] | None = None) -> None:
        """Raise InputError (InputTypeError for a wrong type) for the first input the
        service would refuse, naming it: `texts[3]: empty text`."""
        if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
            raise InputTypeError(f"texts must be a list of strings, not {type(texts).__name__} (one text: predict([text]))")  # fmt: skip
        if entities is not None:
            if isinstance(entities, str | bytes) or not isinstance(entities, Sequence):
                raise InputTypeError(f"entities must be a list of strings, not {type(entities).__name__}")  # fmt: skip
            if not self.text_pair:
                raise InputError(f"model {self.name!r} takes no entity: pass texts only")
            if len(entities) != len(texts):
                raise InputError(f"{len(entities)} entities for {len(texts)} texts")
        for i, text in enumerate(texts):
            entity = None if entities is None else entities[i]
            why = text_problem(text, entity)
            if why is not None:
                wrong = not isinstance(text, str) or not isinstance(entity, str | None)
                where = f"entities[{i}]" if why.startswith("entity") else f"texts[{i}]"
                raise (InputTypeError if wrong else InputError)(f"{where}: {why}")

    def predict(
        self, texts: Sequence[str], entities: Sequence[str | None] | None = None
    ) -> list[Prediction]:
        """One prediction per text, in order. `entities` (text-pair models): one per text,
        None or "" for none. Long lists are cut into chunks run on `workers` threads, two
        chunks in flight. Raises InputError naming the first text it cannot read."""
        self.check(texts, entities)
        executor = self._executor() if len(texts) > 1 else None
        out: list[Prediction] = []
        in_flight: deque[tuple[int, Pending]] = deque()
        for first in range(0, len(texts), CHUNK_ROWS):
            chunk = slice(first, first + CHUNK_ROWS)
            pairs = None if entities is None else entities[chunk]
            in_flight.append((first, self.start(texts[chunk], pairs, executor)))
            if len(in_flight) > 1:
                out += self._predictions(*in_flight.popleft())
        while in_flight:
            out += self._predictions(*in_flight.popleft())
        return out

    def _predictions(self, first: int, pending: Pending) -> list[Prediction]:
        for i, why in pending.problems.items():
            raise InputError(f"texts[{first + i}]: {why}")
        return [Prediction(**p) for p in self.finish(pending)]

    def _executor(self) -> Executor | None:
        if self.workers <= 1:
            return None
        with self._lock:
            if not self._pool:
                self._pool.append(ThreadPoolExecutor(self.workers, thread_name_prefix="predict"))
            return self._pool[0]

    def close(self) -> None:
        """Stop this model's threads (a later `predict` starts new ones)."""
        with self._lock:
            while self._pool:
                self._pool.pop().shutdown()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load(
    model: str | Path = DEFAULT_BUNDLE,
    *,
    models: str | Path = MODELS,
    threads: int = 1,
    workers: int = 0,
) -> Model:
    """A model by name (a bundle's or a view's, under `models`) or by bundle folder, its files
    verified against the bundle's manifest. `threads`: ONNX Runtime intra-op threads per run;
    `workers`: runs side by side for a long list (0: one per core, as the service runs). Raises
    UnknownModel (listing the models there are) or BundleError (a bundle that fails its
    manifest)."""
    if threads < 1 or workers < 0:
        raise ValueError(f"threads must be >= 1 and workers >= 0 (got {threads}, {workers})")
    folder, view = resolve_bundle(model, Path(models))
    bundle = load_bundle(folder, verify=True)
    workers = workers or max(1, available_cpus() // threads)
    return Model.from_bundle(bundle, view, threads=threads, workers=workers)
