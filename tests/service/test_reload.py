"""Reloading models without a restart (service/reload.py, its route and the version header),
in process: what a client sees before, during and after a reload, and what a refused one
leaves behind. SIGHUP through a real server process: tests/service/test_server.py."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import shutil
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from service import Settings, create_app
from service import reload as reload_module
from service.bundle import write_manifest
from service.engine import Engine
from tests.service.test_app import Gate, RecordingSupervisor, error_of
from tests.service.tiny_bundle import build_bundle

pytestmark = pytest.mark.timeout(60)
KEY = "r3load-key"
AUTH = {"authorization": f"Bearer {KEY}"}
NEW_LABELS = ["Bad", "Good"]  # what the replacement bundle answers with: which model answered


def sha256(folder: Path) -> str:
    """A bundle's identity as /info reports it: its manifest's SHA-256 (hashlib, not ours)."""
    return hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()


def version(folder: Path, name: str = "tiny-test") -> str:
    return f"{name}@{sha256(folder)[:12]}"


def replace_bundle(folder: Path, **changes: Any) -> Path:
    """Build a new bundle beside `folder` and move it into place, as a deployment would."""
    fresh = build_bundle(folder.with_name(folder.name + ".new"), **changes)
    shutil.rmtree(folder)
    os.replace(fresh, folder)
    return folder


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A bundle folder of this test's own, so the test may replace it."""
    return build_bundle(tmp_path / "bundle")


@pytest.fixture
def settings(make_settings: Callable[..., Settings], served: Path) -> Settings:
    return make_settings(bundles=(served,), api_key=KEY)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def metric(client: TestClient, line: str) -> bool:
    return line in client.get("/metrics").text.splitlines()


@contextlib.asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The app's lifespan running on this loop, and a client. A failing test may leave an
    inference blocked: the shutdown then asks its supervisor to exit, here a recorder."""
    app = create_app(settings, supervisor=RecordingSupervisor())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield app, client


class BlockedWarmup:
    """Engine.warmup that waits for `release` (the models loaded at start pass through)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        warmup = Engine.warmup

        def blocked(engine: Engine, *args: Any) -> None:
            self.calls += 1
            self.entered.set()
            assert self.release.wait(20), "never released"
            warmup(engine, *args)

        self.install = lambda: monkeypatch.setattr(Engine, "warmup", blocked)


# ------------------------------------------------------------------------ the version header


def test_every_answer_names_its_model_and_bundle(client: TestClient, served: Path) -> None:
    one = client.post("/predict", json={"text": "good"}, headers=AUTH)
    many = client.post("/predict", json={"texts": ["good", "bad"]}, headers=AUTH)
    assert one.headers["x-model-version"] == many.headers["x-model-version"] == version(served)
    info = client.get("/info", headers=AUTH).json()["models"][0]
    assert info["bundle_sha256"].startswith(one.headers["x-model-version"].split("@")[1])
    loaded_at = datetime.fromisoformat(info["loaded_at"])
    assert loaded_at.utcoffset() is not None and loaded_at.utcoffset().total_seconds() == 0
    refused = client.post("/predict", json={"text": ""}, headers=AUTH)
    assert refused.status_code == 422 and "x-model-version" not in refused.headers


def test_a_view_answers_under_its_own_name(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    views = {"tiny-binary": ["Negative", "Positive"]}
    three = build_bundle(tmp_path / "three", labels=["Negative", "Neutral", "Positive"],
                         model_name="tiny-3class", views=views)  # fmt: skip
    with TestClient(create_app(make_settings(bundles=(three,)))) as client:
        full = client.post("/predict", json={"text": "good"})
        view = client.post("/predict", json={"text": "good", "model": "tiny-binary"})
    assert full.headers["x-model-version"] == version(three, "tiny-3class")
    assert view.headers["x-model-version"] == version(three, "tiny-binary")


# ----------------------------------------------------------------------------- the endpoint


def test_the_reload_route_exists_only_behind_a_key(
    make_settings: Callable[..., Settings], client: TestClient
) -> None:
    with TestClient(create_app(make_settings())) as open_client:
        missing = open_client.post("/admin/reload")
        assert "/admin/reload" not in open_client.get("/openapi.json").json()["paths"]
    assert missing.status_code == 404 and error_of(missing)["type"] == "not_found"
    for headers in ({}, {"authorization": "Bearer wrong"}):
        refused = client.post("/admin/reload", headers=headers)
        assert refused.status_code == 401 and error_of(refused)["type"] == "unauthorized"
    assert metric(client, 'sentiment_reloads_total{outcome="ok"} 0.0')
    done = client.post("/admin/reload", headers=AUTH)
    assert done.status_code == 200, done.text
    assert metric(client, 'sentiment_reloads_total{outcome="ok"} 1.0')
    assert "/admin/reload" in client.get("/openapi.json").json()["paths"]


def test_an_unchanged_bundle_keeps_its_model(client: TestClient, served: Path) -> None:
    before = client.get("/info", headers=AUTH).json()["models"][0]
    answer = client.post("/admin/reload", headers=AUTH).json()
    model = {"name": "tiny-test", "bundle_sha256": sha256(served),
             "loaded_at": before["loaded_at"], "changed": False}  # fmt: skip
    assert answer == {"changed": False, "models": [model]}


def test_a_replaced_bundle_is_swapped_in_everywhere(client: TestClient, served: Path) -> None:
    old = version(served)
    before = client.get("/info", headers=AUTH).json()["models"][0]
    replace_bundle(served, labels=NEW_LABELS)
    unasked = client.post("/predict", json={"text": "good"}, headers=AUTH)
    assert unasked.headers["x-model-version"] == old  # nothing changes until asked
    answer = client.post("/admin/reload", headers=AUTH).json()
    [model] = answer["models"]
    assert answer["changed"] and model["changed"] and model["bundle_sha256"] == sha256(served)
    assert model["loaded_at"] > before["loaded_at"]
    predicted = client.post("/predict", json={"text": "good"}, headers=AUTH)
    assert predicted.json()["label"] == "Good"
    assert predicted.headers["x-model-version"] == version(served) != old
    info = client.get("/info", headers=AUTH).json()
    assert info["bundle_sha256"] == sha256(served) and info["labels"] == NEW_LABELS
    assert info["models"][0]["loaded_at"] == model["loaded_at"]
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["Prediction"]["properties"]["label"]["enum"] == NEW_LABELS
    assert client.post("/predict", json={"text": "x", "model": "tiny-test"}, headers=AUTH).is_success  # fmt: skip
    exposition = client.get("/metrics").text
    assert f'bundle_sha256="{sha256(served)}"' in exposition
    assert f'bundle_sha256="{before["bundle_sha256"]}"' not in exposition


def _tamper(folder: Path) -> str:
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 1
    model.write_bytes(bytes(data))
    return "model.onnx: sha256 does not match the manifest"


def _break_manifest(folder: Path) -> str:
    (folder / "manifest.json").write_text('{"format": 1, "files": ')
    return "unreadable JSON"


def _rename(folder: Path) -> str:
    replace_bundle(folder, model_name="tiny-renamed")
    return "model names, so a rename needs a restart"


def _unloadable(folder: Path) -> str:
    (folder / "model.onnx").write_bytes(b"not an onnx graph")
    write_manifest(folder, {"note": "verifies, but is no model"})
    return "could not be loaded"


@pytest.mark.parametrize("spoil", [_tamper, _break_manifest, _rename, _unloadable])
def test_a_bad_bundle_is_refused_and_the_old_model_keeps_serving(
    client: TestClient, served: Path, spoil: Callable[[Path], str], caplog: pytest.LogCaptureFixture
) -> None:
    old = version(served)
    why = spoil(served)
    with caplog.at_level(logging.ERROR, logger="service"):
        refused = client.post("/admin/reload", headers=AUTH)
    assert refused.status_code == 409
    error = error_of(refused)
    assert error["type"] == "reload_failed"
    assert str(served) in error["message"] and why in error["message"]
    [line] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert str(served) in line.getMessage() and why in line.getMessage()
    predicted = client.post("/predict", json={"text": "good"}, headers=AUTH)
    assert predicted.json()["label"] == "Positive" and predicted.headers["x-model-version"] == old
    assert client.get("/info", headers=AUTH).json()["models"][0]["name"] == "tiny-test"
    assert metric(client, 'sentiment_reloads_total{outcome="failed"} 1.0')
    assert metric(client, 'sentiment_reloads_total{outcome="ok"} 0.0')


# ------------------------------------------------------------------------- while it reloads


def test_requests_in_flight_finish_on_the_old_model(settings: Settings, served: Path) -> None:
    old_version = version(served)

    async def go() -> tuple[httpx.Response, httpx.Response, str]:
        async with started(settings) as (app, client):
            state = app.state.service
            old = state.registry.default
            gate = Gate(old.scheduler._infer)
            old.scheduler._infer = gate
            engine = weakref.ref(old.engine)
            running = asyncio.ensure_future(
                client.post("/predict", json={"text": "good"}, headers=AUTH)
            )
            await asyncio.to_thread(gate.entered.wait, 5)  # it runs on the old session
            replace_bundle(served, labels=NEW_LABELS)
            reloaded = await client.post("/admin/reload", headers=AUTH)
            assert reloaded.status_code == 200 and not running.done()
            assert state.reloader.retiring == [old]  # still answering what it admitted
            after = await client.post("/predict", json={"text": "good"}, headers=AUTH)
            gate.open.set()
            finished = await running
            while state.reloader.retiring:
                await asyncio.sleep(0.01)
            del old, gate
            gc.collect()
            released = "released" if engine() is None else "still held"
        return finished, after, released

    finished, after, released = asyncio.run(go())
    assert finished.status_code == 200 and finished.json()["label"] == "Positive"
    assert finished.headers["x-model-version"] == old_version
    assert after.json()["label"] == "Good" and after.headers["x-model-version"] == version(served)
    assert released == "released"  # the old session is freed once its last request is done


def test_the_header_changes_only_once_the_new_model_is_warm(
    settings: Settings, served: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = version(served)
    warmup = BlockedWarmup(monkeypatch)

    async def go() -> tuple[list[str], httpx.Response, httpx.Response]:
        async with started(settings) as (_, client):
            replace_bundle(served, labels=NEW_LABELS)
            warmup.install()
            reloading = asyncio.ensure_future(client.post("/admin/reload", headers=AUTH))
            assert await asyncio.to_thread(warmup.entered.wait, 10)
            seen = []  # answered meanwhile: the loop is free, the old model serves
            for _ in range(5):
                during = await client.post("/predict", json={"text": "good"}, headers=AUTH)
                seen.append(during.headers["x-model-version"])
            seen.append((await client.get("/ready")).json()["status"])
            warmup.release.set()
            reloaded = await reloading
            after = await client.post("/predict", json={"text": "good"}, headers=AUTH)
        return seen, reloaded, after

    seen, reloaded, after = asyncio.run(go())
    assert seen == [old] * 5 + ["ready"]
    assert reloaded.status_code == 200 and after.headers["x-model-version"] == version(served)


def test_two_reloads_at_once_run_one_after_the_other(
    settings: Settings, served: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warmup = BlockedWarmup(monkeypatch)
    reads: list[Path] = []
    read = reload_module._read

    def counted(path: Path) -> Any:
        reads.append(path)
        return read(path)

    monkeypatch.setattr(reload_module, "_read", counted)

    async def go() -> tuple[int, list[httpx.Response], str]:
        async with started(settings) as (_, client):
            replace_bundle(served, labels=NEW_LABELS)
            warmup.install()
            first = asyncio.ensure_future(client.post("/admin/reload", headers=AUTH))
            assert await asyncio.to_thread(warmup.entered.wait, 10)
            second = asyncio.ensure_future(client.post("/admin/reload", headers=AUTH))
            for _ in range(20):  # the second has every chance to start: it waits instead
                await asyncio.sleep(0.01)
            started_meanwhile = len(reads)
            warmup.release.set()
            answers = [await first, await second]
            metrics = (await client.get("/metrics")).text
        return started_meanwhile, answers, metrics

    started_meanwhile, answers, metrics = asyncio.run(go())
    assert started_meanwhile == 1 and len(reads) == 2 and warmup.calls == 1
    assert [a.status_code for a in answers] == [200, 200]
    assert [a.json()["changed"] for a in answers] == [True, False]  # the second found it served
    assert 'sentiment_reloads_total{outcome="ok"} 2.0' in metrics.splitlines()


def test_a_shutdown_during_a_reload_stops_it_and_serves_to_the_end(
    settings: Settings, served: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warmup = BlockedWarmup(monkeypatch)

    async def go() -> tuple[bool, httpx.Response, Any]:
        async with started(settings) as (app, client):
            replace_bundle(served, labels=NEW_LABELS)
            warmup.install()
            reloading = app.state.service.reloader.request()
            assert await asyncio.to_thread(warmup.entered.wait, 10)
            answer = await client.post("/predict", json={"text": "good"}, headers=AUTH)
        warmup.release.set()  # the abandoned load may end now: nothing swaps it in
        return reloading.cancelled(), answer, app.state.service

    cancelled, answer, state = asyncio.run(go())
    assert cancelled and answer.json()["label"] == "Positive"
    assert state.registry.default.labels == ("Negative", "Positive") and not state.ready
