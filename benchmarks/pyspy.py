"""Where a server's Python time goes under load: py-spy samples, summarized by category.

Used for an extra, uncounted run after the measured levels (sampling costs CPU on a 2-core
box, so it never overlaps a number that is reported as a result). Optional: without the
py-spy binary the harness says so and goes on.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RATE = 100  # samples per second and thread (py-spy's default)

# First match from the innermost frame outwards decides a sample's category.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("onnxruntime session.run", ("onnxruntime/capi",)),
    ("tensorflow", ("tensorflow/", "tf_keras/", "keras/")),
    ("torch", ("torch/",)),
    ("tokenizer", ("tokenizers/", "tokenization_utils", "encode (")),
    ("json", ("json/",)),
    ("batching / queue", ("service/scheduler.py", "queue", "concurrent/futures")),
    ("HTTP server (uvicorn/starlette)", ("uvicorn/", "starlette/", "httptools", "h11")),
    ("event loop / threads", ("asyncio/", "uvloop", "threading.py", "selectors.py")),
)


def binary() -> str | None:
    """The py-spy executable (next to this interpreter, or on PATH), or None."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def sampled_seconds(seconds: float) -> int:
    """How long py-spy samples when asked for `seconds` (it takes whole seconds)."""
    return max(1, round(seconds))


def start(
    pid: int, seconds: float, out: Path, rate: int = RATE, gil: bool = False
) -> subprocess.Popen[bytes]:
    """Sample `pid` and its children for `seconds` without pausing them (raw collapsed stacks).

    Idle threads are left out (no `--idle`): py-spy counts a thread as idle unless the OS shows
    it running or runnable (state R in /proc), so a sample is a thread on a core or waiting
    for one. With `gil`, a tick samples only the thread holding the GIL: the Python work of
    every thread without the time runnable threads wait for a core (a holder preempted while
    holding it still counts). Threads without Python frames (ONNX Runtime's pool, tokenizers')
    are never seen.
    """
    exe = binary()
    if exe is None:
        raise FileNotFoundError("py-spy is not installed")
    argv = [exe, "record", "--pid", str(pid), "--duration", str(sampled_seconds(seconds)),
            "--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking",
            "--subprocesses", *(["--gil"] if gil else [])]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def warnings(stderr: str) -> list[str]:
    """What py-spy said about its own accuracy (lagging behind the rate, failed samples)."""
    keep = ("behind", "error", "fail", "warn")
    return [line.strip() for line in stderr.splitlines() if any(k in line.lower() for k in keep)]


def category(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, needles in CATEGORIES:
            if any(needle in frame for needle in needles):
                return name
    return "other Python"


def stacks(raw: Path) -> Iterator[tuple[list[str], int]]:
    """py-spy's raw output as (frames, outermost first; samples): one line per distinct stack,
    `process 12:"cmd";func (file.py:10);... 7`; lines that do not end in a count are skipped."""
    for line in raw.read_text(errors="replace").splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if stack_text and count_text.isdigit():
            yield stack_text.split(";")[1:], int(count_text)  # the first entry names the process


def summarize(raw: Path, top: int = 12) -> dict[str, Any]:
    """Samples per category and the functions with the most self time, as shares of all samples."""
    by_category: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    total = 0
    for stack, count in stacks(raw):
        total += count
        by_category[category(stack)] += count
        if stack:
            leaf = stack[-1]
            name, _, where = leaf.partition(" (")
            by_leaf[f"{name} ({where.rsplit(':', 1)[0]})" if where else name] += count
    share = (lambda n: round(n / total, 4)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "categories": [{"category": k, "share": share(v)} for k, v in by_category.most_common()],
        "top_self": [{"function": k, "share": share(v)} for k, v in by_leaf.most_common(top)],
    }
