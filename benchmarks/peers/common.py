"""The handler shape every peer shares: the seed's architecture, one model call per request.

`POST /predict {"text": ...}` calls the predictor inline in the async handler (blocking the
event loop, as the seed's FastAPI handler did) and answers `{"label", "score", "scores"}`;
`GET /ready` answers 200 once the model is loaded and warmed. Bad input gets a JSON 4xx. A peer
that serves an entity-pair model reads `{"text", "entity"}` as ours does (`PairPredictor`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Predictor = Callable[[str], dict[str, Any]]
PairPredictor = Callable[[str, str | None], dict[str, Any]]  # (text, entity or None)
MAX_TEXT_CHARS = 10_000


def make_app(predictor: Predictor | None = None, pairs: PairPredictor | None = None) -> Starlette:
    """A Starlette app (FastAPI's core) with the peers' common /predict and /ready routes: on
    `predictor` (text only: a body with an entity is a 422), or on `pairs`, which also gets
    the body's optional `"entity"`."""
    if (predictor is None) == (pairs is None):
        raise ValueError("give predictor or pairs")

    async def predict(request: Request) -> JSONResponse:
        try:
            payload = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str) or not text.strip():
            return JSONResponse({"error": "'text' must be a non-empty string"}, status_code=422)
        if len(text) > MAX_TEXT_CHARS:
            return JSONResponse({"error": "text too long"}, status_code=413)
        entity = payload.get("entity")
        if entity is not None and (pairs is None or not isinstance(entity, str)):
            why = "'entity' must be a string" if pairs else "this server takes no entity"
            return JSONResponse({"error": why}, status_code=422)
        return JSONResponse(pairs(text, entity) if pairs else predictor(text))  # type: ignore[misc]

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"ready": True})

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/ready", ready)])


def scores_to_result(labels: list[str], probabilities: list[float]) -> dict[str, Any]:
    """The response body shared by all servers: best label, its score, every label's score."""
    best = max(range(len(labels)), key=lambda i: probabilities[i])
    return {
        "label": labels[best],
        "score": float(probabilities[best]),
        "scores": {label: float(p) for label, p in zip(labels, probabilities, strict=True)},
    }


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    return parser


def serve(app: Starlette, host: str, port: int) -> None:
    """uvicorn with its defaults (uvloop + httptools when installed), one worker, no access log."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
