"""The direct `POST /predict` path answers exactly as Starlette's own stack would."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from service import Settings, create_app
from service.app import Handlers, ServiceState
from service.asgi import ObserveMiddleware
from service.engine import Probs
from service.errors import EXCEPTION_HANDLERS
from service.lifecycle import lifespan

JSON = {"content-type": "application/json"}
# (method, path, body, headers): answers, every kind of refusal the handler raises, and the
# routes' own 404/405.
CASES: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("POST", "/predict", b'{"text": "I love this"}', JSON),
    ("POST", "/predict?verbose=1", b'{"texts": ["good", "bad day"]}', JSON),
    ("POST", "/predict", b'{"text": ', JSON),
    ("POST", "/predict", b'{"text": ""}', JSON),
    ("POST", "/predict", b'{"text": "good", "model": "nope"}', JSON),
    ("POST", "/predict", b'{"text": "good", "entity": "x"}', JSON),
    ("POST", "/predict", b'{"texts": ' + b'["a", ' * 40 + b'"a"' + b"]" * 1 + b"}", JSON),
    ("POST", "/predict", b"\xff\xfe", JSON),
    ("POST", "/predict", b'{"text": "good"}', {"content-type": "text/plain"}),
    ("POST", "/predict", b"x" * 5000, JSON),
    ("GET", "/predict", b"", {}),
    ("PUT", "/predict", b"{}", JSON),
    ("POST", "/predict/", b'{"text": "good"}', JSON),
]


def starlette_stack(settings: Settings) -> Starlette:
    """The service as Starlette alone would route it (the app before the direct path)."""
    state = ServiceState(settings, None, None)
    app = Starlette(
        routes=Handlers(state).routes(),
        middleware=[
            Middleware(
                ObserveMiddleware,
                metrics=state.metrics,
                log_requests=settings.access_log,
                admin=state.api_key is not None,
            )
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lambda app: lifespan(state, app),
    )
    app.state.service = state
    return app


@pytest.fixture
def both(make_settings: Callable[..., Settings]) -> Iterator[tuple[TestClient, TestClient]]:
    settings = make_settings(max_texts=32, max_body_bytes=4096)
    with (
        TestClient(create_app(settings), raise_server_exceptions=False) as direct,
        TestClient(starlette_stack(settings), raise_server_exceptions=False) as routed,
    ):
        yield direct, routed


def answer(client: TestClient, case: tuple[str, str, bytes, dict[str, str]]) -> dict[str, Any]:
    method, path, body, headers = case
    response = client.request(method, path, content=body, headers=headers, follow_redirects=False)
    kept = {k: v for k, v in response.headers.items() if k != "date"}
    return {"status": response.status_code, "headers": kept, "body": response.content}


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[1]} {c[2][:16]!r}" for c in CASES])
def test_the_direct_path_answers_as_starlette_does(
    both: tuple[TestClient, TestClient], case: tuple[str, str, bytes, dict[str, str]]
) -> None:
    direct, routed = both
    assert answer(direct, case) == answer(routed, case)


def test_an_unexpected_failure_answers_as_starlette_does_and_is_counted(
    both: tuple[TestClient, TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(rows: Sequence[Sequence[int]]) -> Probs:
        raise RuntimeError("model exploded")

    answers = []
    for client in both:
        app: Any = client.app
        app.state.service.registry.default.scheduler._infer = broken
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            answers.append(answer(client, CASES[0]))
        assert len(caplog.records) == 1  # logged once, with the cause
        assert "model exploded" in str(caplog.records[0].exc_info)
        metrics = client.get("/metrics").text
        assert 'route="/predict",status="500"' in metrics
    assert answers[0] == answers[1] and answers[0]["status"] == 500


def test_other_routes_still_take_starlettes_stack(
    both: tuple[TestClient, TestClient],
) -> None:
    direct, routed = both
    for path in ("/health", "/openapi.json", "/nope"):
        assert answer(direct, ("GET", path, b"", {})) == answer(routed, ("GET", path, b"", {}))


def test_predict_does_not_go_through_the_router(both: tuple[TestClient, TestClient]) -> None:
    """Without its route, POST /predict still answers on the direct path (and only there)."""
    for client in both:
        router: Any = client.app.router  # type: ignore[attr-defined]
        router.routes = [r for r in router.routes if getattr(r, "path", "") != "/predict"]
    direct, routed = both
    assert answer(direct, CASES[0])["status"] == 200
    assert answer(routed, CASES[0])["status"] == 404
