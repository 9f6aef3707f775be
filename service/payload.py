"""The /predict wire format around the schema: read the body, check its media type, the
entity rule of the chosen model, render predictions.

Everything a client can get wrong is decided cheaply and before any model work: 413 (too big),
415 (not JSON), then the schema (schema.py: 400 not UTF-8 / not JSON, 422 wrong shape or
model, 413 too many texts), then 422 (an entity for a model that reads none). Pure functions
of the request, so they are easy to test and fuzz.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from starlette.requests import ClientDisconnect, Request

from service.engine import Encoded, Probs
from service.errors import ApiError
from service.protocol import BODY_RECEIVED
from service.schema import Parsed

CLOSE = {"Connection": "close"}  # after a 408 the rest of the body may still be on its way


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refusing (413) as soon as it is known to exceed `limit` bytes, and
    (408) when it has not fully arrived within `timeout_s`: a client that sends its headers
    and then trickles (or never sends) the body must not hold a connection forever."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is larger than {limit} bytes")
    try:
        if request.scope.get(BODY_RECEIVED):  # whole already (service/protocol.py): no timer
            return await _read(request, limit)
        async with asyncio.timeout(timeout_s):
            return await _read(request, limit)
    except ClientDisconnect:
        raise ApiError(400, "client disconnected before sending the whole body") from None
    except TimeoutError:
        raise ApiError(
            408, f"the request body did not arrive within {timeout_s:g} s", headers=CLOSE
        ) from None


async def _read(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is larger than {limit} bytes")
        chunks.append(chunk)
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


def check_entities(parsed: Parsed, text_pair: bool, model: str | None = None) -> None:
    """422 for entities sent to a model that reads none (rather than silently ignoring them)."""
    if not text_pair and parsed.entities is not None:
        which = "this model" if model is None else f"model {model!r}"
        raise ApiError(422, f"{which} takes no entity: send only 'text' or 'texts'")


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
