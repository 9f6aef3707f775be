"""The /predict wire format: read and validate request bodies, render predictions.

Everything a client can get wrong is decided here, cheaply and before any model work:
413 (too big), 415 (not JSON), 400 (not UTF-8 / not JSON), 422 (wrong shape, a non-string
"model"), 413 (too many texts), 422 (an entity for a model that reads none). Pure functions of the request, so
they are easy to test and fuzz.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import ClientDisconnect, Request

from service.engine import Encoded, Probs
from service.errors import ApiError


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"request body is larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client disconnected before sending the whole body") from None
    return b"".join(chunks)


def check_content_type(value: str | None) -> None:
    """JSON (application/json or application/*+json), and UTF-8 if a charset is given."""
    media, _, params = (value or "").partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise ApiError(415, "Content-Type must be application/json")
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise ApiError(415, "only UTF-8 JSON is accepted")


MAX_ENTITY_CHARS = 100


@dataclass(frozen=True, slots=True)
class Parsed:
    """A predict body: its texts, their entities (entity-pair models), its form and the model
    it names (None: the default model)."""

    texts: list[str]
    entities: list[str] | None  # None: no entity given; "" for the items that came without one
    single: bool
    model: str | None = None


def parse_texts(body: bytes, max_texts: int) -> Parsed:
    """The texts (and entities) of a predict body.

    400: not UTF-8 or not JSON; 422: wrong shape, type or empty text; 413: too many texts.
    Whether the model reads entities depends on the bundle: see `check_entities`; whether the
    named model exists, on the registry.
    """
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"body is not valid UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise ApiError(400, "body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int literals over Python's digit limit
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ApiError(422, 'body must be a JSON object: {"text": ...} or {"texts": [...]}')
    model = _check_model(document.pop("model")) if "model" in document else None
    keys = set(document)
    if keys in ({"text"}, {"text", "entity"}):
        entities = [_check_entity(document["entity"], "entity")] if "entity" in keys else None
        return Parsed([_check_text(document["text"], "text")], entities, True, model)
    if keys == {"texts"}:
        items = document["texts"]
        if not isinstance(items, list):
            raise ApiError(422, "'texts' must be a list")
        if not items:
            raise ApiError(422, "'texts' must not be empty")
        if len(items) > max_texts:
            raise ApiError(413, f"'texts' has {len(items)} items; the limit is {max_texts}")
        pairs = [_check_item(item, f"texts[{i}]") for i, item in enumerate(items)]
        given = any(entity is not None for _, entity in pairs)
        entities = [entity or "" for _, entity in pairs] if given else None
        return Parsed([text for text, _ in pairs], entities, False, model)
    unknown = sorted(keys - {"text", "texts", "entity"})
    if unknown:
        raise ApiError(422, f"unknown field(s) {unknown}; send 'text' or 'texts' (and 'model')")
    if "texts" in keys and "entity" in keys and "text" not in keys:
        raise ApiError(
            422, 'with \'texts\', give each item its entity: {"text": ..., "entity": ...}'
        )
    raise ApiError(422, "send exactly one of 'text' or 'texts'")


def _check_item(item: Any, where: str) -> tuple[str, str | None]:
    """A 'texts' item: a string, or an object {"text": ..., "entity": ...}."""
    if isinstance(item, str):
        return _check_text(item, where), None
    if not isinstance(item, dict):
        raise ApiError(422, f"'{where}' must be a string or an object, not {_json_type(item)}")
    if set(item) not in ({"text"}, {"text", "entity"}):
        raise ApiError(422, f"'{where}' must have 'text' and may have 'entity', nothing else")
    entity = _check_entity(item["entity"], f"{where}.entity") if "entity" in item else None
    return _check_text(item["text"], f"{where}.text"), entity


def check_entities(parsed: Parsed, text_pair: bool, model: str | None = None) -> None:
    """422 for entities sent to a model that reads none (rather than silently ignoring them)."""
    if not text_pair and parsed.entities is not None:
        which = "this model" if model is None else f"model {model!r}"
        raise ApiError(422, f"{which} takes no entity: send only 'text' or 'texts'")


def _check_model(value: Any) -> str:
    if not isinstance(value, str):
        raise ApiError(422, f"'model' must be a string (a model's name), not {_json_type(value)}")
    return value


def _check_entity(value: Any, where: str) -> str:
    entity = _check_text(value, where)
    if len(entity) > MAX_ENTITY_CHARS:
        raise ApiError(422, f"'{where}' is longer than {MAX_ENTITY_CHARS} characters")
    return entity


def _check_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ApiError(422, f"'{where}' must be a string, not {_json_type(value)}")
    if not value or value.isspace():
        raise ApiError(422, f"'{where}' is empty or only whitespace")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, f"'{where}' contains an unpaired UTF-16 surrogate escape") from None
    return value


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def render(labels: tuple[str, ...], probs: Probs, encoded: list[Encoded]) -> list[dict[str, Any]]:
    """One prediction object per row: top label, its score, every score, truncation."""
    out = []
    best = np.argmax(probs, axis=1).tolist()
    for row, top, enc in zip(probs.tolist(), best, encoded, strict=True):
        scores = {label: round(p, 6) for label, p in zip(labels, row, strict=True)}
        out.append(
            {
                "label": labels[top],
                "score": scores[labels[top]],
                "scores": scores,
                "truncated": enc.truncated,
            }
        )
    return out
