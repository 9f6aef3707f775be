"""The OpenAPI 3.1 description of the service, written by hand so it says exactly what the
handlers enforce (limits come from the settings; model names and label names from the loaded
models)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.payload import MAX_ENTITY_CHARS
from service.settings import Settings

# The characters Python's str.isspace() accepts, as an ECMA-262 class (the server treats a text
# made only of these as empty).
NOT_ONLY_SPACE = (
    "[^\\t-\\r\\u001c- \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
)

JSON = "application/json"


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


@dataclass(frozen=True)
class ModelDoc:
    """What the document says about one loaded model."""

    name: str
    labels: Sequence[str]
    text_pair: bool


def _label_schemas(models: Sequence[ModelDoc] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """`label` and `scores`: any label of any model; a score for every label all models share."""
    if not models:
        return {"type": "string"}, {"type": "object", "additionalProperties": {"type": "number"}}
    labels = list(dict.fromkeys(label for model in models for label in model.labels))
    shared = [label for label in labels if all(label in m.labels for m in models)]
    probability = {"type": "number", "minimum": 0, "maximum": 1}
    scores: dict[str, Any] = {
        "type": "object",
        "properties": dict.fromkeys(labels, probability),
        "required": shared,
        "additionalProperties": False,
    }
    return {"type": "string", "enum": labels}, scores


def _model_schema(models: Sequence[ModelDoc] | None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "string",
        "description": (
            "The model to use for the whole request (a loaded bundle's name, see /info "
            "`models`); absent: the default model (/info `default_model`). Unknown: 422."
        ),
    }
    if models:
        schema["enum"] = [model.name for model in models]
    return schema


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


def build_openapi(
    settings: Settings, version: str, models: Sequence[ModelDoc] | None = None
) -> dict[str, Any]:
    """The document for these settings and loaded `models` (None until they are loaded: any
    model name and label, entities described as optional)."""
    label_schema, scores = _label_schemas(models)
    # Entities are documented when some model reads them (and before the models are known).
    text_pair = None if models is None else any(model.text_pair for model in models)
    secured = settings.api_key is not None
    unauthorized: dict[str, Any] = {"401": _error("Missing or wrong API key")} if secured else {}
    security: dict[str, Any] = {"security": [{"bearer": []}]} if secured else {}
    text = {
        "type": "string",
        "minLength": 1,
        "pattern": NOT_ONLY_SPACE,
        "description": "A tweet. Cut to the model's max length in tokens (then `truncated`).",
    }
    entity = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ENTITY_CHARS,
        "pattern": NOT_ONLY_SPACE,
        "description": (
            "What the sentiment is about (a brand, a game): entity-pair models only, optional."
        ),
    }
    item = {
        "type": "object",
        "properties": {"text": _ref("Text"), "entity": _ref("Entity")},
        "required": ["text"],
        "additionalProperties": False,
    }
    # Plain models read strings; entity-pair models also read {text, entity?} items (and
    # before the bundle is loaded either may be right).
    item_ref: dict[str, Any] = (
        _ref("Text") if text_pair is False else {"anyOf": [_ref("Text"), _ref("Item")]}
    )
    one: dict[str, Any] = {"text": _ref("Text")}
    if text_pair is not False:
        one["entity"] = _ref("Entity")
    one["model"] = _ref("Model")
    texts = {"type": "array", "items": item_ref, "minItems": 1, "maxItems": settings.max_texts}
    schemas: dict[str, Any] = {
        "Text": text,
        "Entity": entity,
        "Item": item,
        "Model": _model_schema(models),
        "PredictOne": {
            "type": "object",
            "properties": one,
            "required": ["text"],
            "additionalProperties": False,
        },
        "PredictMany": {
            "type": "object",
            "properties": {"texts": texts, "model": _ref("Model")},
            "required": ["texts"],
            "additionalProperties": False,
        },
        "Prediction": {
            "type": "object",
            "properties": {
                "label": label_schema,
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "scores": scores,
                "truncated": {"type": "boolean"},
                "model": {"type": "string", "description": "The model that answered"},
            },
            "required": ["label", "score", "scores", "truncated"],
            "additionalProperties": False,
        },
        "Predictions": {
            "type": "object",
            "properties": {
                "model": {"type": "string", "description": "The model that answered them all"},
                "predictions": {"type": "array", "items": _ref("Prediction")},
            },
            "required": ["model", "predictions"],
            "additionalProperties": False,
        },
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                    "required": ["type", "message"],
                }
            },
            "required": ["error"],
        },
        "Status": {
            "type": "object",
            "properties": {"status": {"type": "string"}},
            "required": ["status"],
        },
        "Info": {
            "type": "object",
            "properties": {
                "model_name": {"type": "string"},
                "labels": {"type": "array", "items": {"type": "string"}},
                "max_length": {"type": "integer"},
                "text_pair": {"type": "boolean"},
                "bundle_sha256": {"type": "string"},
                "manifest": {"type": "object"},
                "mode": {"type": "string", "enum": ["batched", "direct"]},
                "versions": {"type": "object", "additionalProperties": {"type": "string"}},
                "limits": {"type": "object", "additionalProperties": {"type": "number"}},
                "runtime": {"type": "object"},
                "default_model": {"type": "string"},
                "models": {"type": "array", "items": _ref("ModelInfo")},
            },
            "required": [
                *("model_name", "labels", "max_length", "bundle_sha256", "versions"),
                *("default_model", "models"),
            ],
        },
        "ModelInfo": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "labels": {"type": "array", "items": {"type": "string"}},
                "max_length": {"type": "integer"},
                "text_pair": {"type": "boolean"},
                "bundle_sha256": {"type": "string"},
                "manifest": {"type": "object"},
                "max_batch": {"type": "integer"},
                "batch_drift": {"type": "number"},
            },
            "required": ["name", "labels", "max_length", "text_pair", "bundle_sha256"],
        },
    }
    predict = {
        "post": {
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
            **security,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"oneOf": [_ref("PredictOne"), _ref("PredictMany")]}}},
            },
            "responses": {
                "200": {
                    "description": "Predictions (a `Prediction` for `text`, `Predictions` for `texts`)",
                    "content": {
                        JSON: {"schema": {"oneOf": [_ref("Prediction"), _ref("Predictions")]}}
                    },
                },
                "400": _error("Body is not valid UTF-8 JSON"),
                **unauthorized,
                "413": _error("Body or number of texts over the limit"),
                "415": _error("Content-Type is not application/json"),
                "422": _error(
                    "JSON does not match the request schema, `model` names no loaded model "
                    "(the message lists them), or an entity for a model that reads none"
                ),
                "503": _retry_error("Queue full, request timed out, or model not ready"),
            },
        }
    }

    def simple(op: str, summary: str, ok: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"operationId": op, "summary": summary, "responses": {"200": ok, **extra}}}

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tweet sentiment API",
            "version": version,
            "description": "DistilBERT sentiment on CPU, served with ONNX Runtime.",
        },
        "paths": {
            "/predict": predict,
            "/health": simple("health", "Liveness", _ok("Status", "Process is alive"), {}),
            "/ready": simple(
                "ready",
                "Readiness: every model loaded and warm, not draining",
                _ok("Status", "Ready"),
                {"503": _ok("Status", "Loading or draining")},
            ),
            "/metrics": simple(
                "metrics",
                "Prometheus metrics",
                {"description": "Exposition format", "content": {"text/plain": {}}},
                {},
            ),
            "/info": {
                "get": {
                    **simple(
                        "info",
                        "Model and service facts",
                        _ok("Info", "Facts of every model (top level: the default model)"),
                        {**unauthorized, "503": _retry_error("Model not loaded yet")},
                    )["get"],
                    **security,
                }
            },
            "/openapi.json": simple(
                "openapi",
                "This document",
                {"description": "OpenAPI 3.1", "content": {JSON: {}}},
                {},
            ),
        },
        "components": {
            "schemas": schemas,
            **(
                {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
                if secured
                else {}
            ),
        },
    }
