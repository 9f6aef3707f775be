"""Every knob of the service, read once from `SENTIMENT_*` environment variables.

One frozen object, validated as a whole at startup: a bad value stops the process with a
message naming the variable, instead of surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

PREFIX = "SENTIMENT_"
DEFAULT_BUNDLE = Path("models/sentiment-3class")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists every problem."""


def available_cpus() -> int:
    """Cores this process may use: CPU affinity, capped by a cgroup v2 CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


@dataclass(frozen=True)
class Settings:
    """Service configuration; `from_env` documents the variable behind each field."""

    # The served bundles, the first being the default model. `bundle` is the one-bundle alias
    # (SENTIMENT_BUNDLE, kept for existing configs); both given and different is an error.
    # Neither given: DEFAULT_BUNDLE. After construction `bundles` is always the resolved list.
    bundles: tuple[Path, ...] = ()
    bundle: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    threads: int = 0  # intra-op threads per session.run; 0 = automatic (1)
    pool_size: int = 0  # concurrent session.run calls per worker; 0 = cores // workers // threads
    # Threads that run only while a model's queue is full (refusing): clients that retry at
    # once then take fewer cores from the answers; idle under ordinary load (0 = none).
    overload_spare: int = 0
    spin: bool = False  # let ORT's idle intra-op threads spin-wait (faster only on idle cores)
    # Threads for a run that has the machine to itself (nothing else running or queued):
    # 0 = auto (the worker's cores, kept only if a start-up measurement shows it is faster
    # than `threads`), 1 = never, N = always N (no measurement).
    idle_threads: int = 0
    # The event loop thread's nice value above the inference threads': under overload its work
    # (parsing, refusing) takes a smaller share of the cores than the answers (0 = equal).
    loop_nice: int = 5
    max_batch: int = 16  # rows per session.run (a request's texts, cut by length)
    max_tokens: int = 2048  # rows x padded length per session.run
    batch_tolerance: float = 1e-4  # max |Δprob| batching may cause, else rows run one by one
    queue_size: int = 512  # texts admitted and not yet answered, per worker
    request_timeout_s: float = 10.0
    max_body_bytes: int = 65536
    body_timeout_s: float = 5.0  # a body not fully arrived by then gets 408 (slow clients)
    header_timeout_s: float = 5.0  # request headers not complete by then: 408 and close
    # Connections (uvicorn's limit_concurrency) beyond which new requests get an immediate 503
    # from the server itself: a cap on the memory and CPU thousands of clients can take.
    max_connections: int = 2048
    max_texts: int = 64
    api_key: str | None = None
    log_level: str = "info"
    access_log: bool = True
    drain_delay_s: float = 0.0  # on SIGTERM, /ready is 503 this long before the listener closes
    shutdown_timeout_s: float = 30.0  # longest wait for accepted requests after SIGTERM
    keepalive_s: int = 5
    warmup: bool = True

    def __post_init__(self) -> None:
        cores = available_cpus()
        # Measured on 2 cores at 500 concurrent users: two single-threaded runs side by side
        # beat one run on two threads (no intra-op synchronisation, and the event loop gets
        # its share). So by default: 1 thread per run, one run per core.
        per_worker = max(1, cores // max(1, self.workers))
        if self.threads == 0:
            object.__setattr__(self, "threads", 1)
        if self.pool_size == 0:
            object.__setattr__(self, "pool_size", max(1, per_worker // max(1, self.threads)))
        problems = self._problems(self._resolve_bundles())
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))

    @property
    def longest_request_s(self) -> float:
        """The longest an admitted request can take: it waits at most one request timeout to
        start (then 503), and a started one gets one more before it is failed."""
        return 2 * self.request_timeout_s

    @property
    def cores_per_worker(self) -> int:
        return max(1, available_cpus() // max(1, self.workers))

    def _resolve_bundles(self) -> bool:
        """Fill `bundles` from itself, the `bundle` alias or the default; True if the two
        were both given and disagree (SENTIMENT_BUNDLE=a with SENTIMENT_BUNDLES=b,c)."""
        listed = tuple(Path(path) for path in self.bundles)
        alias = () if self.bundle is None else (Path(self.bundle),)
        object.__setattr__(self, "bundle", alias[0] if alias else None)
        object.__setattr__(self, "bundles", listed or alias or (DEFAULT_BUNDLE,))
        return bool(listed and alias) and listed != alias

    def _problems(self, bundle_conflict: bool) -> list[str]:
        twice = sorted({str(p) for p in self.bundles if self.bundles.count(p) > 1})
        checks: list[tuple[bool, str]] = [
            (
                not bundle_conflict,
                f"SENTIMENT_BUNDLE={self.bundle} and SENTIMENT_BUNDLES="
                f"{','.join(map(str, self.bundles))} disagree: set only SENTIMENT_BUNDLES "
                "(SENTIMENT_BUNDLE is its one-bundle alias)",
            ),
            (not twice, f"SENTIMENT_BUNDLES lists {', '.join(twice)} more than once"),
            (self.host != "", "SENTIMENT_HOST must not be empty"),
            (0 <= self.port <= 65535, "SENTIMENT_PORT must be in 0..65535"),
            (self.workers >= 1, "SENTIMENT_WORKERS must be >= 1"),
            (self.threads >= 1, "SENTIMENT_THREADS must be >= 1"),
            (self.idle_threads >= 0, "SENTIMENT_IDLE_THREADS must be >= 0 (0 = auto)"),
            (0 <= self.loop_nice <= 19, "SENTIMENT_LOOP_NICE must be in 0..19"),
            (self.pool_size >= 1, "SENTIMENT_POOL_SIZE must be >= 1"),
            (self.overload_spare >= 0, "SENTIMENT_OVERLOAD_SPARE must be >= 0"),
            (self.max_batch >= 1, "SENTIMENT_MAX_BATCH must be >= 1"),
            (self.max_tokens >= 1, "SENTIMENT_MAX_TOKENS must be >= 1"),
            (self.batch_tolerance >= 0, "SENTIMENT_BATCH_TOLERANCE must be >= 0"),
            (self.max_texts >= 1, "SENTIMENT_MAX_TEXTS must be >= 1"),
            (
                self.queue_size >= self.max_texts,
                "SENTIMENT_QUEUE_SIZE must be >= SENTIMENT_MAX_TEXTS (a full request must fit)",
            ),
            (self.request_timeout_s > 0, "SENTIMENT_REQUEST_TIMEOUT_S must be > 0"),
            (self.max_body_bytes >= 16, "SENTIMENT_MAX_BODY_BYTES must be >= 16"),
            (self.api_key is None or self.api_key.strip() != "", "SENTIMENT_API_KEY is blank"),
            (self.log_level in LOG_LEVELS, f"SENTIMENT_LOG_LEVEL must be one of {LOG_LEVELS}"),
            (self.drain_delay_s >= 0, "SENTIMENT_DRAIN_DELAY_S must be >= 0"),
            (self.shutdown_timeout_s > 0, "SENTIMENT_SHUTDOWN_TIMEOUT_S must be > 0"),
            (self.body_timeout_s > 0, "SENTIMENT_BODY_TIMEOUT_S must be > 0"),
            (self.header_timeout_s > 0, "SENTIMENT_HEADER_TIMEOUT_S must be > 0"),
            (self.max_connections >= 1, "SENTIMENT_MAX_CONNECTIONS must be >= 1"),
            (
                self.shutdown_timeout_s >= self.longest_request_s,
                f"SENTIMENT_SHUTDOWN_TIMEOUT_S ({self.shutdown_timeout_s:g}) must be >= "
                f"2 x SENTIMENT_REQUEST_TIMEOUT_S ({self.longest_request_s:g}): a request "
                "admitted just before SIGTERM may wait one timeout for a core and run for "
                "another",
            ),
            (self.keepalive_s >= 1, "SENTIMENT_KEEPALIVE_S must be >= 1"),
        ]
        return [message for ok, message in checks if not ok]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read `SENTIMENT_<FIELD>` variables (unset or empty = default); `overrides` win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for field in fields(cls):
            name = PREFIX + field.name.upper()
            raw = env.get(name, "").strip()
            if raw == "" or field.name in overrides:
                continue
            try:
                values[field.name] = _PARSERS[field.name](raw)
            except ValueError as exc:
                problems.append(f"{name}={raw!r}: {exc}")
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))
        return cls(**{**values, **overrides})

    @classmethod
    def unknown_variables(cls, environ: Mapping[str, str] | None = None) -> list[str]:
        """`SENTIMENT_*` variables that match no setting (typos are otherwise silent)."""
        env = os.environ if environ is None else environ
        known = {PREFIX + field.name.upper() for field in fields(cls)}
        return sorted(name for name in env if name.startswith(PREFIX) and name not in known)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with `changes`; the pool size is recomputed when workers or threads change,
        and a new `bundle` replaces `bundles` (and vice versa) instead of conflicting with it."""
        auto: dict[str, Any] = {"pool_size": 0} if {"workers", "threads"} & changes.keys() else {}
        if "bundle" in changes:
            auto["bundles"] = ()
        if "bundles" in changes:
            auto["bundle"] = None
        return replace(self, **{**auto, **changes})

    def public(self) -> dict[str, Any]:
        """The settings as JSON-able values, with the API key masked (for /info and logs)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["bundles"] = [str(path) for path in self.bundles]
        out["bundle"] = None if self.bundle is None else str(self.bundle)
        out["api_key"] = "***" if self.api_key else None
        return out


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true/false")


def _paths(raw: str) -> tuple[Path, ...]:
    parts = [part.strip() for part in raw.split(",")]
    if not all(parts):
        raise ValueError("expected comma-separated bundle folders, found an empty entry")
    return tuple(Path(part) for part in parts)


def _int(raw: str) -> int:
    try:
        return int(raw, 10)
    except ValueError:
        hint = " (Kubernetes service links inject SENTIMENT_PORT=tcp://...: set enableServiceLinks: false)"
        raise ValueError("expected an integer" + (hint if "://" in raw else "")) from None


def _float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return raw.lower()

    return parse


_PARSERS: dict[str, Callable[[str], Any]] = {
    "bundles": _paths,
    "bundle": Path,
    "host": str,
    "port": _int,
    "workers": _int,
    "threads": _int,
    "idle_threads": _int,
    "loop_nice": _int,
    "pool_size": _int,
    "overload_spare": _int,
    "spin": _bool,
    "max_batch": _int,
    "max_tokens": _int,
    "batch_tolerance": _float,
    "queue_size": _int,
    "request_timeout_s": _float,
    "max_body_bytes": _int,
    "max_texts": _int,
    "api_key": str,
    "log_level": _choice(LOG_LEVELS),
    "access_log": _bool,
    "drain_delay_s": _float,
    "shutdown_timeout_s": _float,
    "body_timeout_s": _float,
    "header_timeout_s": _float,
    "max_connections": _int,
    "keepalive_s": _int,
    "warmup": _bool,
}
