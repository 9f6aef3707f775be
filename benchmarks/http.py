"""HTTP-level benchmark: start a server process, drive it with a closed-loop client, measure.

The client is a raw asyncio HTTP/1.1 client over keep-alive sockets (uvloop when present): the
load generator shares the CPU with the server, so every microsecond it spends is one the server
does not get. Its own CPU time is measured and reported next to the server's.

Closed loop: `concurrency` workers each send the next request as soon as the last one returns.
Every run is bounded in time (per-request timeout, fixed warm-up and measurement windows), and
every non-2xx, malformed body, timeout or connection failure is counted as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks import pyspy
from benchmarks.machine import busy_processes
from benchmarks.stats import latency_summary

# The CPUs this process may use at start, before any client pinning (Linux; [] elsewhere).
ALL_CPUS: list[int] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def build_requests(
    texts: Sequence[str],
    host: str,
    port: int,
    path: str = "/predict",
    headers: dict[str, str] | None = None,
    entities: Sequence[str] | None = None,
) -> list[bytes]:
    """Pre-encoded `POST {"text": ...}` requests (with `"entity"` for entity-pair models), so
    the client does no JSON work per request."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    out = []
    for i, text in enumerate(texts):
        document = {"text": text} if entities is None else {"text": text, "entity": entities[i]}
        body = json.dumps(document).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


class ProtocolError(ConnectionError):
    """The server's response could not be framed (no Content-Length, garbage status line)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection that carries one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False
        self.retry_after = 0.0  # the last response's Retry-After (seconds), 0 if none

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        try:
            status = int(head[9:12])
            at = head.index(b"content-length:") + 15
            stop = head.find(b"\r\n", at)
            length = int(head[at : stop if stop >= 0 else None])
        except ValueError:
            self.waiter.set_exception(ProtocolError(f"unframed response: {head[:80]!r}"))
            self.close()
            return
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        at = head.find(b"retry-after:")
        self.retry_after = 0.0
        if at >= 0:
            with contextlib.suppress(ValueError):
                stop = head.find(b"\r\n", at)
                self.retry_after = float(head[at + 12 : stop if stop >= 0 else None])
        if b"connection: close" in head:
            self.close()
        self.waiter.set_result((status, body))

    def send(self, payload: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


@dataclass
class _Tally:
    """What the workers saw inside the measurement window (and errors during warm-up)."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    warmup_errors: Counter[str] = field(default_factory=Counter)


async def _closed_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    warmup: float,
    duration: float,
    timeout: float,
    honour_retry_after: bool = False,
) -> tuple[_Tally, float, float, int]:
    loop = asyncio.get_running_loop()
    tally = _Tally()
    start = time.perf_counter()
    window_start = start + warmup
    window_end = window_start + duration
    counter = 0
    inflight = 0
    conns: list[_Connection] = []

    async def worker(offset: int) -> None:
        nonlocal counter, inflight
        conn: _Connection | None = None
        while time.perf_counter() < window_end:
            if conn is None or conn.closed:
                try:
                    async with asyncio.timeout(timeout):
                        _, conn = await loop.create_connection(_Connection, host, port)
                    conns.append(conn)
                except (OSError, TimeoutError) as exc:
                    if time.perf_counter() >= window_start:
                        tally.errors[f"connect:{type(exc).__name__}"] += 1
                    conn = None
                    await asyncio.sleep(0.05)
                    continue
            payload = requests[(counter + offset) % len(requests)]
            counter += 1
            sent = time.perf_counter()
            inflight += 1
            try:
                async with asyncio.timeout(timeout):
                    status, body = await conn.send(payload)
                error = None if status == 200 and b'"label"' in body else f"http_{status}"
            except TimeoutError:
                error = "timeout"
                conn.close()
            except (OSError, ConnectionError) as exc:
                error = f"conn:{type(exc).__name__}"
                conn.close()
            except Exception as exc:  # a client bug must show up as errors, not a silent stall
                error = f"client:{type(exc).__name__}"
                conn.close()
            finally:
                inflight -= 1
            done = time.perf_counter()
            if window_start <= done <= window_end:
                if error is None:
                    tally.latencies.append(done - sent)
                else:
                    tally.errors[error] += 1
            elif error is not None and done < window_start:
                tally.warmup_errors[error] += 1
            if honour_retry_after and error == "http_503" and conn.retry_after > 0:
                await asyncio.sleep(conn.retry_after)  # a client that does what it is told
        if conn is not None:
            conn.close()

    tasks = [asyncio.create_task(worker(i * 7919)) for i in range(concurrency)]
    await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
    unfinished = inflight  # requests still waiting when the window closed (not counted)
    # The level ends with its window: nothing after it is counted, so nothing is waited for.
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in conns:
        conn.close()
    return tally, window_start, window_end, unfinished


def _cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def run_level(
    host: str,
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    warmup: float,
    duration: float,
    timeout: float,
    server_pid: int | None = None,
    at_window_start: Callable[[], object] | None = None,
    honour_retry_after: bool = False,
    keep_latencies: bool = False,
) -> dict[str, Any]:
    """One closed-loop level: RPS, latency percentiles, errors, and CPU of server vs client.

    `at_window_start` is called when the measurement window opens (e.g. to start a profiler);
    `keep_latencies` adds every latency (s) as `latencies_s`, for pooling several runs.
    """
    client = [psutil.Process()]
    server = _tree(server_pid) if server_pid else []

    async def main() -> tuple[_Tally, float, float, int, dict[str, float]]:
        cpu: dict[str, float] = {}

        async def sample_cpu(at: float, key: str) -> None:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            if key == "start" and at_window_start is not None:
                at_window_start()
            cpu[f"client_{key}"] = _cpu_seconds(client)
            cpu[f"server_{key}"] = _cpu_seconds(server)
            cpu[f"wall_{key}"] = time.perf_counter()

        run = asyncio.create_task(
            _closed_loop(
                host, port, requests, concurrency, warmup, duration, timeout, honour_retry_after
            )
        )
        now = time.perf_counter()
        await asyncio.gather(
            sample_cpu(now + warmup, "start"), sample_cpu(now + warmup + duration, "end")
        )
        tally, w0, w1, unfinished = await run
        return tally, w0, w1, unfinished, cpu

    tally, w0, w1, unfinished, cpu = _run(main())
    ok = len(tally.latencies)
    errors = sum(tally.errors.values())
    wall = cpu.get("wall_end", w1) - cpu.get("wall_start", w0)
    cores = psutil.cpu_count() or 1
    return {
        "concurrency": concurrency,
        "duration_s": duration,
        "ok": ok,
        "errors": errors,
        "error_kinds": dict(tally.errors),
        "warmup_errors": dict(tally.warmup_errors),  # not counted above, shown for honesty
        "unfinished_at_end": unfinished,
        "rps": round(ok / duration, 1),
        **latency_summary(tally.latencies),
        "server_cpu_cores": round((cpu["server_end"] - cpu["server_start"]) / wall, 2)
        if server
        else None,
        "client_cpu_cores": round((cpu["client_end"] - cpu["client_start"]) / wall, 2),
        "client_cpu_us_per_request": round(
            (cpu["client_end"] - cpu["client_start"]) / max(ok + errors, 1) * 1e6, 1
        ),
        "machine_cores": cores,
        **({"latencies_s": tally.latencies} if keep_latencies else {}),
    }


def _run(coro: Any) -> Any:
    """Run a coroutine on uvloop when installed (a cheaper client), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class ServerError(RuntimeError):
    """A server process died or never became ready; the message carries its log's tail."""


class Server:
    """A server in its own process group, started, waited for (`GET ready_path` = 200) and stopped."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        env: dict[str, str] | None = None,
        ready_path: str = "/ready",
        startup_timeout: float = 180.0,
        cpus: Sequence[int] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.ready_path = ready_path
        self.startup_timeout = startup_timeout
        self.cpus = list(cpus) if cpus else None
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> Server:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Explicitly, even unpinned: a pinned client must not hand its own affinity down.
        with contextlib.suppress(psutil.Error, AttributeError):
            psutil.Process(self.process.pid).cpu_affinity(self.cpus or ALL_CPUS)
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise ServerError(
            f"{self.name} not ready after {self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM the server's own process group, SIGKILL it if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def bench_server(
    name: str,
    argv: Sequence[str],
    env: dict[str, str],
    port: int,
    texts: Sequence[str],
    levels: Sequence[int],
    warmup: float,
    duration: float,
    timeout: float,
    headers: dict[str, str] | None = None,
    cpus: Sequence[int] | None = None,
    startup_timeout: float = 180.0,
    profile: bool = False,
    log: Any = print,
    entities: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every concurrency level against a freshly started server (`entities`: one per text, for
    an entity-pair model).

    A fresh server per level keeps one level's backlog (a slow peer still working through
    requests whose clients timed out) from leaking into the next. With `profile`, one more
    run at the top level is sampled by py-spy; it is reported apart and never counted.
    """
    requests = build_requests(texts, "127.0.0.1", port, headers=headers, entities=entities)
    result: dict[str, Any] = {"name": name, "argv": list(argv), "levels": []}
    for level in levels:
        server = Server(name, argv, port, env, startup_timeout=startup_timeout, cpus=cpus)
        try:
            server.start()
        except ServerError as exc:
            result["skipped"] = str(exc)
            log(f"  {name}: SKIPPED, server failed to start: {exc}")
            return result
        try:
            row = run_level(
                "127.0.0.1", port, requests, level, warmup, duration, timeout, server.pid
            )
        finally:
            server.stop()
        row["other_heavy_jobs"] = busy_processes()  # a training run that started meanwhile
        result["levels"].append(row)
        log(
            f"  {name} c={level:>3}: {row['rps']:7.1f} rps  p50 {row['p50_ms']} ms  p99 "
            f"{row['p99_ms']} ms  errors {row['errors']}  cpu server {row['server_cpu_cores']} "
            f"client {row['client_cpu_cores']}"
        )
    if profile and levels:
        result["py_spy"] = profile_run(
            name, argv, env, port, requests, max(levels), warmup, duration, timeout, cpus,
            startup_timeout,
        )  # fmt: skip
        cats = result["py_spy"].get("categories", [])
        log(f"  {name} py-spy: " + ", ".join(f"{c['category']} {c['share']:.0%}" for c in cats[:5])
            + result["py_spy"].get("skipped", ""))  # fmt: skip
    return result


def profile_run(
    name: str,
    argv: Sequence[str],
    env: dict[str, str],
    port: int,
    requests: Sequence[bytes],
    level: int,
    warmup: float,
    duration: float,
    timeout: float,
    cpus: Sequence[int] | None,
    startup_timeout: float,
) -> dict[str, Any]:
    """An extra, uncounted run at `level` with py-spy sampling the server during the window."""
    if pyspy.binary() is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    raw = Path(tempfile.mkstemp(prefix=f"pyspy-{name}-", suffix=".txt")[1])
    sampler: list[subprocess.Popen[bytes]] = []
    server = Server(name, argv, port, env, startup_timeout=startup_timeout, cpus=cpus)
    try:
        server.start()
        row = run_level(
            "127.0.0.1", port, requests, level, warmup, duration, timeout, server.pid,
            at_window_start=lambda: sampler.append(pyspy.start(server.pid, duration, raw)),
        )  # fmt: skip
        if sampler:
            _, err = sampler[0].communicate(timeout=duration + 30)
            if sampler[0].returncode != 0 or raw.stat().st_size == 0:
                return {"skipped": f"py-spy failed: {err.decode(errors='replace')[-300:]}"}
        return {"level": level, "rps_while_sampled": row["rps"], **pyspy.summarize(raw)}
    except (ServerError, OSError, subprocess.SubprocessError) as exc:
        return {"skipped": f"profile run failed: {exc}"}
    finally:
        for proc in sampler:
            if proc.poll() is None:
                proc.kill()
        server.stop()
        raw.unlink(missing_ok=True)


def python_module(module: str, *args: str) -> list[str]:
    """argv to run `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]
