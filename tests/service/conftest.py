"""Fixtures for the service tests: tiny bundles (see tiny_bundle.py; `tiny_bundle` itself is in
tests/conftest.py), settings, a client."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

warnings.filterwarnings("ignore", category=StarletteDeprecationWarning)  # "install httpx2"
from starlette.testclient import TestClient  # noqa: E402

from service import Settings, create_app  # noqa: E402
from tests.service.tiny_bundle import build_bundle  # noqa: E402


@pytest.fixture(scope="session")
def slow_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bundle") / "slow", slow=24)


@pytest.fixture
def make_settings(tiny_bundle: Path) -> Callable[..., Settings]:
    def make(**changes: Any) -> Settings:
        """Settings serving `tiny_bundle`, or `bundles=(...)` when given."""
        # idle_threads=1: one session, so a test that swaps the scheduler's infer sees every
        # run (the idle path has its own tests).
        base: dict[str, Any] = {"threads": 1, "idle_threads": 1, "access_log": False}
        if "bundles" not in changes:
            base["bundle"] = tiny_bundle
        return Settings(**{**base, **changes})

    return make


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as test_client:
        yield test_client
