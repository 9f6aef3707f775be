"""Every answer of a long-running load, with when it came, what failed and which model version
and replica answered: the bookkeeping the load-balancer stage reports from.

A scenario is a time window over one ledger: requests ok, failed (split: a non-200 status, a
connection error or reset, a timeout), answers by version and by replica, and a time series
that shows a switch from one version (or replica) to another.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

VERSION_HEADER = b"x-model-version:"
SERVED_BY_HEADER = b"x-served-by:"
_MODEL = re.compile(rb'"model"\s*:\s*"([^"]*)"')
_SCORES = re.compile(rb'"scores"\s*:\s*\{([^}]*)\}')
_LABEL = re.compile(rb'"([^"]+)"\s*:')


def classify(error: str | None) -> str:
    """`ok`, or the kind of failure: `http` (an answer with another status, or a 200 without a
    label), `connection` (refused, reset or closed: the load client's `connect:` and `conn:`),
    `timeout`, or `other` (a client bug, counted rather than hidden)."""
    if error is None:
        return "ok"
    if error.startswith("http_"):
        return "http"
    if error.startswith(("conn:", "connect:")):
        return "connection"
    if error == "timeout":
        return "timeout"
    return "other"


def _header(head: bytes, name: bytes) -> str | None:
    """A header's value from a lower-cased response head, or None."""
    at = head.find(b"\r\n" + name)
    if at < 0:
        return None
    start = at + 2 + len(name)
    stop = head.find(b"\r\n", start)
    return head[start : stop if stop >= 0 else None].strip().decode(errors="replace")


def version_of(head: bytes, body: bytes) -> str | None:
    """Which model version answered: the `x-model-version` header when the service sends it
    (`name@sha12`), else the body's model name and labels (`name[Negative,Positive]`: a service
    without the header still shows a switch between bundles with different labels)."""
    header = _header(head, VERSION_HEADER)
    if header:
        return header
    model = _MODEL.search(body)
    scores = _SCORES.search(body)
    if model is None and scores is None:
        return None
    name = model.group(1).decode(errors="replace") if model else "?"
    labels = _LABEL.findall(scores.group(1)) if scores else []
    return f"{name}[{','.join(label.decode(errors='replace') for label in labels)}]"


def served_by(head: bytes) -> str | None:
    """The replica the balancer says answered (`x-served-by`), or None."""
    return _header(head, SERVED_BY_HEADER)


@dataclass(frozen=True)
class Entry:
    """One answer or failure: when (perf_counter s), the error kind (None: ok), the version
    and the replica (None when unknown)."""

    t: float
    error: str | None
    version: str | None = None
    server: str | None = None


class Ledger:
    """Entries appended by the load's thread (in time order: one thread records, stamping each
    as it records it), read by time windows from another."""

    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._times: list[float] = []
        self._lock = threading.Lock()

    def record(
        self, t: float, error: str | None, version: str | None = None, server: str | None = None
    ) -> None:
        with self._lock:
            if self._times and t < self._times[-1]:
                t = self._times[-1]  # keep the order bisect relies on
            self._entries.append(Entry(t, error, version, server))
            self._times.append(t)

    def window(self, start: float, end: float) -> list[Entry]:
        """The entries in [start, end)."""
        with self._lock:
            lo = bisect.bisect_left(self._times, start)
            hi = bisect.bisect_left(self._times, end)
            return self._entries[lo:hi]

    def summary(self, start: float, end: float) -> dict[str, Any]:
        """Requests ok and failed in [start, end), failures split by kind, and the answers by
        version and by replica."""
        return summarize(self.window(start, end))

    def series(self, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        return series(self.window(start, end), start, end, step)

    def first(
        self,
        after: float,
        version: str | None = None,
        server: str | None = None,
        other_than: str | None = None,
    ) -> float | None:
        """When the first ok answer at or after `after` came (from `version`, from `server`,
        from a known version other than `other_than`)."""
        for e in self.window(after, math.inf):
            if e.error is None and _matches(e, version, server, other_than):
                return e.t
        return None

    def last(
        self, before: float, version: str | None = None, server: str | None = None
    ) -> float | None:
        """When the last ok answer before `before` came (from `version`, from `server`)."""
        for e in reversed(self.window(-math.inf, before)):
            if e.error is None and _matches(e, version, server):
                return e.t
        return None

    def dominant_version(self, start: float, end: float, server: str | None = None) -> str | None:
        """The version that gave most answers in [start, end) (from `server`)."""
        entries = self.window(start, end)
        versions = Counter(
            e.version for e in entries if e.error is None and _matches(e, None, server)
        )
        versions.pop(None, None)
        return versions.most_common(1)[0][0] if versions else None


def _matches(
    e: Entry, version: str | None, server: str | None, other_than: str | None = None
) -> bool:
    """`e` is from `version` and `server` (None: any), and of a known version other than
    `other_than` (None: any)."""
    if other_than is not None and e.version in (None, other_than):
        return False
    return (version is None or e.version == version) and (server is None or e.server == server)


def summarize(entries: list[Entry]) -> dict[str, Any]:
    """ok / failed counts (failed split into http, connection, timeout, other, each by exact
    kind) and ok answers by version and by replica."""
    kinds: dict[str, Counter[str]] = {}
    ok = 0
    versions: Counter[str] = Counter()
    servers: Counter[str] = Counter()
    for e in entries:
        kind = classify(e.error)
        if kind == "ok":
            ok += 1
            versions[e.version or "unknown"] += 1
            servers[e.server or "unknown"] += 1
        else:
            kinds.setdefault(kind, Counter())[str(e.error)] += 1
    failed = sum(sum(c.values()) for c in kinds.values())
    return {
        "requests": ok + failed,
        "ok": ok,
        "failed": failed,
        "failed_by_kind": {k: dict(sorted(c.items())) for k, c in sorted(kinds.items())},
        "versions": dict(sorted(versions.items())),
        "servers": dict(sorted(servers.items())),
    }


def series(entries: list[Entry], start: float, end: float, step: float) -> list[dict[str, Any]]:
    """Per `step` seconds from `start`: ok answers by version and by replica, and failures."""
    if step <= 0:
        raise ValueError("step must be > 0")
    # Whole steps; a last sliver under a millisecond joins the last step rather than showing
    # up as an empty one.
    count = max(1, math.ceil((end - start) / step - 1e-3))
    rows: list[dict[str, Any]] = [
        {"t": round(i * step, 3), "ok": 0, "failed": 0, "versions": Counter(), "servers": Counter()}
        for i in range(count)
    ]
    for e in entries:
        row = rows[min(count - 1, int((e.t - start) / step))]
        if e.error is None:
            row["ok"] += 1
            row["versions"][e.version or "unknown"] += 1
            row["servers"][e.server or "unknown"] += 1
        else:
            row["failed"] += 1
    for row in rows:
        row["versions"] = dict(sorted(row["versions"].items()))
        row["servers"] = dict(sorted(row["servers"].items()))
    return rows
