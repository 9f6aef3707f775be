from __future__ import annotations

import json

import numpy as np
import pytest

from service.engine import Encoded
from service.errors import ApiError
from service.payload import (
    MAX_ENTITY_CHARS,
    Parsed,
    check_content_type,
    check_entities,
    parse_texts,
    render,
)


def test_parse_single_and_many() -> None:
    assert parse_texts(b'{"text": "hi"}', 4) == Parsed(["hi"], None, True)
    assert parse_texts(json.dumps({"texts": ["a", "b"]}).encode(), 4) == Parsed(
        ["a", "b"], None, False
    )
    assert parse_texts('{"text": "café 😀"}'.encode(), 4) == Parsed(["café 😀"], None, True)


def test_parse_entities() -> None:
    assert parse_texts(b'{"text": "hi", "entity": "Xbox"}', 4) == Parsed(["hi"], ["Xbox"], True)
    items = [{"text": "a", "entity": "X"}, {"entity": "Y", "text": "b"}]
    body = json.dumps({"texts": items}).encode()
    assert parse_texts(body, 4) == Parsed(["a", "b"], ["X", "Y"], False)
    body = json.dumps({"texts": ["a", {"text": "b"}]}).encode()  # objects without entity: fine
    assert parse_texts(body, 4) == Parsed(["a", "b"], None, False)
    body = json.dumps({"texts": ["a", {"text": "b", "entity": "Y"}]}).encode()
    assert parse_texts(body, 4) == Parsed(["a", "b"], ["", "Y"], False)  # "": none given


def test_parse_model_for_single_and_many() -> None:
    body = json.dumps({"model": "m", "text": "hi"}).encode()
    assert parse_texts(body, 4) == Parsed(["hi"], None, True, "m")
    body = json.dumps({"texts": [{"text": "a", "entity": "X"}], "model": "m"}).encode()
    assert parse_texts(body, 4) == Parsed(["a"], ["X"], False, "m")
    assert parse_texts(b'{"text": "hi"}', 4).model is None  # the default model


@pytest.mark.parametrize("value", [3, None, True, ["m"], {"name": "m"}])
def test_a_model_that_is_not_a_string_is_422(value: object) -> None:
    for document in ({"text": "a", "model": value}, {"texts": ["a"], "model": value}):
        with pytest.raises(ApiError) as info:
            parse_texts(json.dumps(document).encode(), 4)
        assert info.value.status == 422 and "'model' must be a string" in info.value.message


@pytest.mark.parametrize(
    ("document", "status", "message"),
    [
        ({"text": "a", "entity": None}, 422, "'entity' must be a string, not null"),
        ({"text": "a", "entity": " "}, 422, "'entity' is empty"),
        ({"text": "a", "entity": "x" * (MAX_ENTITY_CHARS + 1)}, 422, "longer than"),
        ({"texts": [{"text": "a", "entity": 3}]}, 422, "'texts[0].entity' must be a string"),
        ({"texts": [{"text": ""}]}, 422, "'texts[0].text' is empty"),
        ({"texts": [{"text": "a", "x": 1}]}, 422, "may have 'entity', nothing else"),
        ({"texts": [["a"]]}, 422, "'texts[0]' must be a string or an object, not a list"),
        ({"texts": ["a", "b", "c"]}, 413, "limit is 2"),
        ({"texts": ["a"], "entity": "X"}, 422, "give each item its entity"),
        ({"text": "a", "entities": ["X"]}, 422, "unknown field(s) ['entities']"),
        ({"entity": "X"}, 422, "exactly one of 'text' or 'texts'"),
        ({"text": "a", "texts": ["b"], "entity": "X"}, 422, "exactly one of 'text' or 'texts'"),
    ],
)
def test_parse_entity_errors(document: dict[str, object], status: int, message: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_texts(json.dumps(document).encode(), 2)
    assert info.value.status == status and message in info.value.message, info.value.message


def test_only_pair_models_take_entities() -> None:
    check_entities(Parsed(["a"], ["X"], True), text_pair=True)
    check_entities(Parsed(["a"], None, True), text_pair=True)
    check_entities(Parsed(["a"], None, True), text_pair=False)
    with pytest.raises(ApiError) as info:
        check_entities(Parsed(["a"], ["X"], True), text_pair=False)
    assert info.value.status == 422
    with pytest.raises(ApiError) as info:
        check_entities(Parsed(["a"], ["X"], True), text_pair=False, model="plain")
    assert "model 'plain' takes no entity" in info.value.message


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"texts": ["a", "b", "c"]}', 413),
        (b'{"texts": ["a", ""]}', 422),
        (b"\xc3\x28", 400),
        (b"[]", 422),
        (b'{"text": "a"} {"text": "b"}', 400),  # trailing data
        (b"NaN", 422),  # valid for Python's json, but not an object
    ],
)
def test_parse_errors(body: bytes, status: int) -> None:
    with pytest.raises(ApiError) as info:
        parse_texts(body, 2)
    assert info.value.status == status


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("application/json", True),
        ("application/json;charset=UTF-8", True),
        ('application/json; charset="utf-8"', True),
        ("application/problem+json", True),
        ("application/json; charset=iso-8859-1", False),
        ("application/jsonx", False),
        ("text/json", False),
        (None, False),
    ],
)
def test_content_types(value: str | None, ok: bool) -> None:
    if ok:
        check_content_type(value)
    else:
        with pytest.raises(ApiError) as info:
            check_content_type(value)
        assert info.value.status == 415


def test_render_picks_the_top_label_and_keeps_label_order() -> None:
    probs = np.array([[0.2, 0.8], [0.9, 0.1]], dtype=np.float32)
    out = render(("Negative", "Positive"), probs, [Encoded([1], False), Encoded([2], True)])
    assert [p["label"] for p in out] == ["Positive", "Negative"]
    assert list(out[0]["scores"]) == ["Negative", "Positive"]
    assert out[0]["score"] == out[0]["scores"]["Positive"] == pytest.approx(0.8)
    assert [p["truncated"] for p in out] == [False, True]
