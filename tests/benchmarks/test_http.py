"""The closed-loop client against a real server process (the tiny bundle), at tiny scale."""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import client, http
from benchmarks.ports import free_port
from benchmarks.server_process import Server

Argv = Callable[..., list[str]]

TEXTS = ["I love this game", "worst update, I hate it", "the best game"]
LEVEL_KEYS = {
    "concurrency",
    "duration_s",
    "ok",
    "errors",
    "error_kinds",
    "warmup_errors",
    "other_heavy_jobs",
    "unfinished_at_end",
    "rps",
    "n",
    "mean_ms",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "server_cpu_cores",
    "client_cpu_cores",
    "client_cpu_us_per_request",
    "machine_cores",
}


@pytest.mark.slow  # a server process
def test_bench_server_measures_every_level(tiny_bundle: Path, tiny_server_argv: Argv) -> None:
    port = free_port()
    result = http.bench_server(
        "tiny",
        tiny_server_argv(tiny_bundle, port),
        {},
        port,
        http.Plan(TEXTS, [1, 4], warmup=0.2, duration=0.8, timeout=5.0),
        log=lambda _: None,
    )
    assert "skipped" not in result
    assert [lvl["concurrency"] for lvl in result["levels"]] == [1, 4]
    for lvl in result["levels"]:
        assert set(lvl) == LEVEL_KEYS
        assert lvl["errors"] == 0 and lvl["ok"] > 0 and lvl["ok"] == lvl["n"]
        assert lvl["rps"] == pytest.approx(lvl["ok"] / 0.8, rel=0.01)
        assert lvl["server_cpu_cores"] > 0


@pytest.mark.slow  # a server process
def test_non_2xx_answers_are_counted_as_errors(tiny_bundle: Path, tiny_server_argv: Argv) -> None:
    port = free_port()
    with Server("tiny", tiny_server_argv(tiny_bundle, port, "--fail-every", "5"), port) as s:
        row = http.run_level(
            "127.0.0.1",
            port,
            client.build_requests(TEXTS, "127.0.0.1", port),
            2,
            0.1,
            0.6,
            5.0,
            s.pid,
        )
    assert row["ok"] > 0
    assert row["error_kinds"].get("http_503", 0) == row["errors"] > 0
    assert row["errors"] == pytest.approx((row["ok"] + row["errors"]) / 5, abs=3)


@pytest.mark.slow  # a server process
def test_slow_server_times_out_and_the_run_stays_bounded(
    tiny_bundle: Path, tiny_server_argv: Argv
) -> None:
    port = free_port()
    with Server("slow", tiny_server_argv(tiny_bundle, port, "--sleep-ms", "3000"), port) as s:
        start = time.monotonic()
        row = http.run_level(
            "127.0.0.1",
            port,
            client.build_requests(TEXTS, "127.0.0.1", port),
            8,
            0.0,
            1.0,
            0.3,
            s.pid,
        )
        elapsed = time.monotonic() - start
    assert row["ok"] == 0
    assert row["error_kinds"].get("timeout", 0) >= 8  # every worker timed out at least once
    assert elapsed < 2.5  # not 3 s of server sleep, nor warm-up + duration + timeout stacked


def test_a_refused_connection_is_an_error_not_a_hang() -> None:
    port = free_port()  # nothing listens there
    row = http.run_level(
        "127.0.0.1", port, client.build_requests(TEXTS, "127.0.0.1", port), 2, 0.0, 0.3, 0.5
    )
    assert row["ok"] == 0 and row["errors"] > 0
    assert all(kind.startswith("connect:") for kind in row["error_kinds"])


@pytest.mark.slow  # a server process
def test_a_server_that_cannot_start_is_skipped_with_its_log(
    tmp_path: Path, tiny_server_argv: Argv
) -> None:
    port = free_port()
    result = http.bench_server(
        "broken",
        tiny_server_argv(tmp_path / "no-bundle", port),
        {},
        port,
        http.Plan(TEXTS, [1], warmup=0.1, duration=0.1, timeout=1.0),
        log=lambda _: None,
    )
    assert result["levels"] == []
    assert "exited with code" in result["skipped"] and "bundle" in result["skipped"]


def test_requests_are_valid_http_with_json_bodies() -> None:
    (raw,) = client.build_requests(['say "hi" 🤣'], "127.0.0.1", 8000, headers={"X-API-Key": "k"})
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"POST /predict HTTP/1.1\r\n")
    assert b"X-API-Key: k" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert body == b'{"text": "say \\"hi\\" \\ud83e\\udd23"}'
    (raw,) = client.build_requests(["good"], "127.0.0.1", 8000, entities=["Xbox"])
    assert raw.split(b"\r\n\r\n")[1] == b'{"text": "good", "entity": "Xbox"}'


class _FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


def _exchange(chunks: list[bytes]) -> tuple[asyncio.Future[tuple[int, bytes]], _FakeTransport]:
    async def go() -> tuple[asyncio.Future[tuple[int, bytes]], _FakeTransport]:
        conn = client._Connection()
        transport = _FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        future = conn.send(b"request")
        for chunk in chunks:
            conn.data_received(chunk)
        await asyncio.sleep(0)
        return future, transport

    return asyncio.run(go())


def test_client_frames_responses_split_across_reads() -> None:
    response = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{"label": "ok"}'
    future, transport = _exchange([response[:7], response[7:60], response[60:]])
    assert future.result() == (200, b'{"label": "ok"}')
    assert transport.written == b"request" and not transport.closed


def test_client_rejects_unframed_responses_and_honours_connection_close() -> None:
    future, transport = _exchange([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"])
    with pytest.raises(client.ProtocolError):
        future.result()
    assert transport.closed
    closing = b"HTTP/1.1 503 X\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    future, transport = _exchange([closing])
    assert future.result() == (503, b"{}") and transport.closed


@pytest.mark.parametrize("honour", [True, False])
def test_clients_that_honour_retry_after_wait_before_retrying(honour: bool) -> None:
    """A server that always answers 503 with Retry-After: 1. Honouring clients send about one
    request per connection per second; wrk-style clients hammer it."""
    body = b'{"error": {"type": "overloaded"}}'
    answer = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"retry-after: 1\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )

    async def go() -> client.Tally:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await reader.readuntil(b"\r\n\r\n"):
                await reader.readexactly(2)
                writer.write(answer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        request = b"POST /predict HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}"
        async with server:
            load = client.Load("127.0.0.1", port, [request], 2, 0.0, 1.5, 5.0, honour)
            return await client.closed_loop(load)

    tally = asyncio.run(go())
    sent = tally.errors["http_503"]
    assert (sent <= 2 * 2) if honour else (sent > 50)


def test_answers_count_by_when_they_came() -> None:
    tally = client.Tally(window_start=10.0, window_end=20.0)
    tally.record(9.0, 9.5, "timeout")  # during warm-up: shown apart, not counted
    tally.record(9.0, 9.6, None)  # a warm-up success: not counted
    tally.record(9.5, 10.5, None)  # answered inside the window: its whole latency
    tally.record(11.0, 12.0, "http_503")
    tally.record(19.0, 20.5, "timeout")  # after the window: not at all
    assert tally.latencies == [1.0]
    assert tally.errors == {"http_503": 1} and tally.warmup_errors == {"timeout": 1}
