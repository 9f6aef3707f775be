"""The OpenAPI 3.1 document of the service. Its schemas are generated from the same types that
validate requests (schema.py); this module adds only what is not a type: the routes, their
status codes and descriptions, the examples and security. Limits come from the settings, model
names and labels from the loaded models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.asgi import PREDICT
from service.schema import ModelDoc, Schema
from service.settings import Settings

__all__ = ["ModelDoc", "build_openapi"]

JSON = "application/json"
MODEL_VERSION = {
    "description": "The model that answered and its bundle: `<model>@<first 12 hex digits of "
    "its bundle_sha256>` (/info); it changes when a reload swaps in a new bundle",
    "required": True,
    "schema": {"type": "string", "pattern": "^.+@[0-9a-f]{12}$"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _retry_error(description: str) -> dict[str, Any]:
    return {
        **_error(description),
        "headers": {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
        },
    }


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


def _predict(settings: Settings, schema: Schema, auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationId": "predict",
        "summary": "Sentiment of one text or of a list of texts",
        "description": (
            f"Send `text` (one prediction) or `texts` (1 to {settings.max_texts}, answered "
            f"in input order). Body at most {settings.max_body_bytes} bytes of UTF-8 JSON. "
            "Entity-pair models (`text_pair` in /info) score the sentiment toward an "
            "entity: send `entity` with `text`, and `{text, entity}` objects as `texts` "
            "items; without one the model reads an empty entity. `model` picks one loaded "
            "model for the whole request (default: /info `default_model`); the answer "
            "names it."
        ),
        **auth.get("security", {}),
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {"oneOf": [_ref("PredictOne"), _ref("PredictMany")]},
                    "examples": schema.examples(),
                }
            },
        },
        "responses": {
            "200": {
                "description": "Predictions (a `Prediction` for `text`, `Predictions` for `texts`)",
                "headers": {"x-model-version": MODEL_VERSION},
                "content": {JSON: {"schema": {"oneOf": [_ref("Prediction"), _ref("Predictions")]}}},
            },
            "400": _error("Body is not valid UTF-8 JSON"),
            **auth.get("401", {}),
            "413": _error("Body or number of texts over the limit"),
            "415": _error("Content-Type is not application/json"),
            "422": _error(
                "JSON does not match the request schema, `model` names no loaded model "
                "(the message lists them), or an entity for a model that reads none"
            ),
            "503": _retry_error("Queue full, request timed out, or model not ready"),
        },
    }


def _get(op: str, summary: str, ok: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"operationId": op, "summary": summary, "responses": {"200": ok, **extra}}}


def _reload(auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationId": "reload",
        "summary": "Reload the configured bundles without a restart (as SIGHUP does)",
        "description": (
            "Every configured bundle folder is read again and verified against its manifest; "
            "a changed one is loaded and warmed while the service answers, then swapped in "
            "(requests already running finish on the old model). A bundle that fails, or "
            "that would change a model name, refuses the whole reload: 409, the old models "
            "keep serving. Reloads run one at a time. Only routed when an API key is set."
        ),
        **auth["security"],
        "responses": {
            "200": _ok("Reloaded", "Every model name as it serves now"),
            **auth["401"],
            "409": _error("A bundle was refused (the message names it and why)"),
            "503": _retry_error("Models not loaded yet, or shutting down"),
        },
    }


def _paths(settings: Settings, schema: Schema, auth: dict[str, Any]) -> dict[str, Any]:
    info = _get(
        "info",
        "Model and service facts",
        _ok("Info", "Facts of every model (top level: the default model)"),
        {**auth.get("401", {}), "503": _retry_error("Model not loaded yet")},
    )
    info["get"].update(auth.get("security", {}))
    admin = {"/admin/reload": {"post": _reload(auth)}} if auth else {}
    return {
        PREDICT: {"post": _predict(settings, schema, auth)},
        "/health": _get("health", "Liveness", _ok("Status", "Process is alive"), {}),
        "/ready": _get(
            "ready",
            "Readiness: every model loaded and warm, not draining",
            _ok("Status", "Ready"),
            {"503": _ok("Status", "Loading or draining")},
        ),
        "/metrics": _get(
            "metrics",
            "Prometheus metrics",
            {"description": "Exposition format", "content": {"text/plain": {}}},
            {},
        ),
        "/info": info,
        "/openapi.json": _get(
            "openapi", "This document", {"description": "OpenAPI 3.1", "content": {JSON: {}}}, {}
        ),
        **admin,
    }


def build_openapi(
    settings: Settings, version: str, models: Sequence[ModelDoc] | None = None
) -> dict[str, Any]:
    """The document for these settings and loaded `models` (None until they are loaded: any
    model name and label, entities described as optional)."""
    schema = Schema(settings.max_texts, models)
    auth: dict[str, Any] = {}
    if settings.api_key is not None:
        auth = {
            "security": {"security": [{"bearer": []}]},
            "401": {"401": _error("Missing or wrong API key")},
        }
    components: dict[str, Any] = {"schemas": schema.components(admin=bool(auth))}
    if auth:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tweet sentiment API",
            "version": version,
            "description": "DistilBERT sentiment on CPU, served with ONNX Runtime. "
            "Interactive page: /docs.",
        },
        "paths": _paths(settings, schema, auth),
        "components": components,
    }
