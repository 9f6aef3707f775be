"""Text in, probabilities out: the tokenizer and the one ONNX Runtime session of a process.

The engine knows nothing about HTTP or queues. `encode` turns texts (with their entities, for
entity-pair models) into token ids truncated to the bundle's max length, `infer` runs one
padded batch. Both are safe to call from several
threads at once; callers keep them off the event loop when they are not trivially cheap.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from service.bundle import CONFIG, Bundle, BundleError
from service.preprocess import preprocessor

log = logging.getLogger("service.engine")

Probs = npt.NDArray[np.float32]
# Varied lengths and content: any batch-coupled op (e.g. dynamic int8 activation scales chosen
# per tensor) shows up as a difference between these run alone and run together.
PROBE_TEXTS = (
    "I love this!",
    "worst update ever, the servers are down again and support does not answer",
    "ok",
    "The new season starts tonight at 8pm, can't wait to see what happens to everyone",
    "meh.",
    "Customer support fixed my account in five minutes, thanks a lot @company",
    "why is the battery so bad after the update?? #fail",
    "12345 !!! ??? ...",
)
_DTYPES: dict[str, type[np.integer[Any]]] = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def view_columns(labels: Sequence[str], view: Sequence[str]) -> tuple[int, ...]:
    """The columns of `labels` a view keeps, in the view's order."""
    return tuple(labels.index(label) for label in view)


def project(probs: Probs, columns: Sequence[int]) -> Probs:
    """A view's probabilities: its columns, renormalised to sum to one (P(label | view))."""
    kept = probs[:, list(columns)]
    out: Probs = kept / kept.sum(axis=1, keepdims=True)
    return out


def pad_right(
    rows: Sequence[Sequence[int]],
    pad_id: int,
    ids_type: type[np.integer[Any]] = np.int64,
    mask_type: type[np.integer[Any]] = np.int64,
) -> tuple[npt.NDArray[np.integer[Any]], npt.NDArray[np.integer[Any]]]:
    """Ids and mask padded on the right to the longest row: the fused Attention op reads the
    mask as lengths, so left padding would silently give wrong answers."""
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=ids_type)
    mask = np.zeros((len(rows), width), dtype=mask_type)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def session_options(threads: int, spin: bool) -> ort.SessionOptions:
    """The service's ONNX Runtime settings, defined once so the benchmarks measure the same.

    `threads` intra-op threads, one inter-op thread and nodes run in order (parallelism comes
    from concurrent runs, one per core), every graph optimisation, warnings silenced. Without
    `spin`, idle intra-op threads sleep: spinning would burn the cores the event loop needs.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


@dataclass(frozen=True, slots=True)
class Encoded:
    """One tokenized text: ids including special tokens, and whether the text was cut."""

    ids: list[int]
    truncated: bool


class EncodeError(ValueError):
    """The input cannot be tokenized for this model (e.g. an entity that leaves no room)."""


class Engine:
    """Tokenizer + InferenceSession for one bundle, with the session's input contract checked."""

    def __init__(
        self, bundle: Bundle, *, threads: int, spin: bool = False, idle_threads: int = 1
    ) -> None:
        self.bundle = bundle
        self.labels = bundle.labels
        self.max_length = bundle.max_length
        self.text_pair = bundle.text_pair
        self.normalise = preprocessor(bundle.preprocess)  # what training did to every text
        self.tokenizer = self._load_tokenizer(bundle)
        self.pad_id = self._pad_id(bundle, self.tokenizer)
        self.threads = threads
        self.session = self._load_session(bundle, threads, spin)
        self._inputs, self._output = self._check_contract(self.session, len(self.labels))
        # A second session for a run that has the machine to itself: more intra-op threads,
        # spinning (a waking thread costs more than the work on a lone tweet). Same weights
        # from the same file; it costs memory per bundle (service/README.md, *Memory*), so it
        # is dropped if it does not pay.
        self.idle_threads = idle_threads if idle_threads > threads else threads
        self.idle_session = (
            self._load_session(bundle, idle_threads, spin=True) if idle_threads > threads else None
        )

    @staticmethod
    def _load_tokenizer(bundle: Bundle) -> Tokenizer:
        try:
            tokenizer = Tokenizer.from_file(str(bundle.tokenizer_path))
        except Exception as exc:
            raise BundleError(f"{bundle.tokenizer_path}: unreadable tokenizer: {exc}") from exc
        tokenizer.no_padding()  # padding is done per batch, to the longest row
        # As in training: an entity-pair model keeps its entity whole and cuts the text.
        strategy = "only_second" if bundle.text_pair else "longest_first"
        tokenizer.enable_truncation(bundle.max_length, strategy=strategy)
        return tokenizer

    @staticmethod
    def _pad_id(bundle: Bundle, tokenizer: Tokenizer) -> int:
        config = json.loads((bundle.path / CONFIG).read_text())
        pad = config.get("pad_token_id")
        if isinstance(pad, int):
            return pad
        found = tokenizer.token_to_id("[PAD]")
        return 0 if found is None else int(found)

    @staticmethod
    def _load_session(bundle: Bundle, threads: int, spin: bool) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(
                str(bundle.model_path),
                session_options(threads, spin),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:
            raise BundleError(f"{bundle.model_path}: ONNX Runtime cannot load it: {exc}") from exc

    @staticmethod
    def _check_contract(
        session: ort.InferenceSession, n_labels: int
    ) -> tuple[dict[str, type[np.integer[Any]]], str]:
        inputs: dict[str, type[np.integer[Any]]] = {}
        for node in session.get_inputs():
            if node.type not in _DTYPES:
                raise BundleError(f"model input {node.name!r} has unsupported type {node.type}")
            inputs[node.name] = _DTYPES[node.type]
        known = {"input_ids", "attention_mask", "token_type_ids"}
        if not {"input_ids", "attention_mask"} <= inputs.keys() or not inputs.keys() <= known:
            raise BundleError(f"model inputs {sorted(inputs)}; expected input_ids, attention_mask")
        outputs = [node for node in session.get_outputs()]
        output = next((node for node in outputs if node.name == "logits"), outputs[0])
        width = output.shape[-1] if output.shape else None
        if isinstance(width, int) and width != n_labels:
            raise BundleError(f"model has {width} logits but config.json lists {n_labels} labels")
        return inputs, output.name

    def encode(self, texts: Sequence[str], entities: Sequence[str] | None = None) -> list[Encoded]:
        """Tokenize (batch call: the Rust side runs it in parallel, without the GIL).

        Entity-pair models read "[CLS] entity [SEP] text [SEP]"; a text without an entity gets
        an empty one ("[CLS] [SEP] text [SEP]"). Other models take no entities. A bundle that
        declares a preprocess gets its texts normalised first, as in training.
        """
        if entities is not None and not self.text_pair:
            raise EncodeError("this model takes no entities")
        if entities is None and self.text_pair:
            entities = [""] * len(texts)
        if entities is not None and len(entities) != len(texts):
            raise EncodeError(f"{len(entities)} entities for {len(texts)} texts")
        if self.normalise is not None:  # the text only: an entity names a brand as written
            texts = [self.normalise(text) for text in texts]
        try:
            if len(texts) == 1:  # skips the batch call's thread-pool hand-off
                one = (texts[0],) if entities is None else (entities[0], texts[0])
                encodings = [self.tokenizer.encode(*one)]
            elif entities is None:
                encodings = self.tokenizer.encode_batch(list(texts))
            else:
                encodings = self.tokenizer.encode_batch(list(zip(entities, texts, strict=True)))
        except Exception as exc:  # tokenizers raises a bare Exception ("Truncation error: ...")
            raise EncodeError(
                f"an entity leaves no room for its text within {self.max_length} tokens"
            ) from exc
        return [Encoded(enc.ids, bool(enc.overflowing)) for enc in encodings]

    def infer(self, rows: Sequence[Sequence[int]]) -> Probs:
        """Softmax probabilities for one batch, right-padded to its longest row."""
        return self._run(self.session, rows)

    def infer_alone(self, rows: Sequence[Sequence[int]]) -> Probs:
        """`infer` for a run with the machine to itself: on the idle session's threads when
        there is one. The answers are the same (the graph is batch- and thread-invariant)."""
        return self._run(self.idle_session or self.session, rows)

    def drop_idle_session(self) -> None:
        self.idle_session = None
        self.idle_threads = self.threads

    def _run(self, session: ort.InferenceSession, rows: Sequence[Sequence[int]]) -> Probs:
        ids, mask = pad_right(
            rows, self.pad_id, self._inputs["input_ids"], self._inputs["attention_mask"]
        )
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids, dtype=self._inputs["token_type_ids"])
        logits = np.asarray(session.run([self._output], feed)[0], dtype=np.float32)
        if logits.shape != (len(rows), len(self.labels)):
            raise RuntimeError(f"model returned logits of shape {logits.shape}")
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs: Probs = shifted / shifted.sum(axis=1, keepdims=True)
        return probs

    def batch_drift(self) -> float:
        """Largest |Δprob| between the probe texts run one by one and run as one padded batch.

        0 (or float noise) for fp32 and weight-only quantized graphs; large for dynamic int8,
        whose activation scale is taken over the whole batch: a text's answer then depends on
        which other texts share its batch.
        """
        rows = [enc.ids for enc in self.encode(PROBE_TEXTS)]
        alone = np.concatenate([self.infer([row]) for row in rows])
        return float(np.abs(self.infer(rows) - alone).max())

    def time_alone(self, budget_s: float) -> dict[int, float]:
        """Median ms of the probe texts run one at a time on each session (threads -> ms),
        alternating sessions, within about `budget_s`: what the start-up layout choice reads."""
        rows = [enc.ids for enc in self.encode(PROBE_TEXTS)]
        sessions = {self.threads: self.session}
        if self.idle_session is not None:
            sessions[self.idle_threads] = self.idle_session
        times: dict[int, list[float]] = {n: [] for n in sessions}
        deadline = perf_counter() + budget_s
        while perf_counter() < deadline or not all(times.values()):
            for n, session in sessions.items():
                for row in rows:
                    start = perf_counter()
                    self._run(session, [row])
                    times[n].append(perf_counter() - start)
        return {n: round(1000 * float(np.median(t)), 3) for n, t in times.items()}

    def warmup(self, max_batch: int, max_tokens: int) -> None:
        """Run the extreme shapes once so the first real requests do not pay for allocation."""
        cls_sep = self.encode(["warm up"])[0].ids
        full = [cls_sep[0]] + [cls_sep[1]] * (self.max_length - 1)
        rows = max(1, min(max_batch, max_tokens // self.max_length))
        for batch in ([cls_sep], [cls_sep] * max_batch, [full] * rows):
            self.infer(batch)
        if self.idle_session is not None:  # runs alone: one row at a time
            for batch in ([cls_sep], [full]):
                self.infer_alone(batch)
        log.info("warm-up done", extra={"rows": max_batch, "max_length": self.max_length})
