"""Rows/s of the offline scorer against the HTTP API on the same file, and whether they agree.

    nice -n 0 .venv/bin/python tools/score_vs_http.py FILE.csv --entity-col entity

1. `python -m service.score FILE` (wall time from start to the last row written);
2. `python -m service` on a free loopback port with the same bundle, then the same rows sent as
   `texts` requests of --batch rows by --clients concurrent clients (wall time of the sending);
3. the two outputs compared row by row (label, scores).

Run it on an idle machine (no training, no other benchmark): both sides use every core.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rows_of(path: Path, text_col: str, entity_col: str | None) -> list[Any]:
    """The rows the scorer keeps (non-blank text), as request items."""
    with open(path, newline="", encoding="utf-8") as handle:
        items: list[Any] = []
        for row in csv.DictReader(handle):
            text = row.get(text_col) or ""
            if text.strip():
                entity = (row.get(entity_col) or "") if entity_col else ""
                items.append({"text": text, "entity": entity} if entity else text)
        return items


def run_scorer(args: argparse.Namespace, out: Path) -> float:
    command = [sys.executable, "-m", "service.score", str(args.file), "--model", args.model,
               "--text-col", args.text_col, "-o", str(out), "--no-progress"]  # fmt: skip
    if args.entity_col:
        command += ["--entity-col", args.entity_col]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    return time.perf_counter() - start


def chunks(items: list[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


async def send_all(url: str, items: list[Any], batch: int, clients: int) -> list[Any]:
    answers: list[Any] = [None] * len(items)
    queue = list(chunks(items, batch))

    async def client(http: httpx.AsyncClient) -> None:
        while queue:
            start, part = queue.pop()
            response = await http.post(url + "/predict", json={"texts": part})
            response.raise_for_status()
            answers[start : start + len(part)] = response.json()["predictions"]

    async with httpx.AsyncClient(timeout=120) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return answers


def run_http(args: argparse.Namespace, items: list[Any]) -> tuple[float, list[Any]]:
    port = free_port()
    env = {**os.environ, "SENTIMENT_BUNDLES": args.model, "SENTIMENT_PORT": str(port),
           "SENTIMENT_ACCESS_LOG": "false", "SENTIMENT_LOG_LEVEL": "warning"}  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        start = time.perf_counter()
        answers = asyncio.run(send_all(url, items, args.batch, args.clients))
        return time.perf_counter() - start, answers
    finally:
        server.terminate()
        server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="a CSV with a header")
    parser.add_argument("--text-col", default="text")
    parser.add_argument("--entity-col")
    parser.add_argument("--model", default="models/sentiment-binary", help="a bundle folder")
    parser.add_argument("--batch", type=int, default=64, help="texts per HTTP request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    args = parser.parse_args()
    items = rows_of(args.file, args.text_col, args.entity_col)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scored.csv"
        scorer_s = run_scorer(args, out)
        http_s, answers = run_http(args, items)
        with open(out, newline="", encoding="utf-8") as handle:
            scored = list(csv.DictReader(handle))
    differ = sum(
        row["label"] != answer["label"]
        or any(float(row[f"score_{k}"]) != v for k, v in answer["scores"].items())
        for row, answer in zip(scored, answers, strict=True)
    )
    n = len(items)
    print(f"rows {n}: scorer {n / scorer_s:.1f} rows/s ({scorer_s:.1f} s, process start and "
          f"model load included); HTTP {n / http_s:.1f} rows/s ({http_s:.1f} s, {args.clients} "
          f"clients x {args.batch} texts per request); rows that differ: {differ}")  # fmt: skip


if __name__ == "__main__":
    main()
