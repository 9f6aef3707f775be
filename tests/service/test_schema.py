"""service.schema: one set of types validates /predict bodies and generates the document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.errors import ApiError
from service.schema import MAX_ENTITY_CHARS, ModelDoc, Parsed, Schema

PLAIN = [ModelDoc("m", ["Negative", "Positive"], False)]
PAIR = [ModelDoc("m", ["Negative", "Positive"], True)]


def parse_texts(body: bytes, max_texts: int, models: list[ModelDoc] | None = None) -> Parsed:
    return Schema(max_texts, models).parse(body)


def error_of(body: bytes | dict[str, Any], max_texts: int = 2, models: Any = None) -> ApiError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ApiError) as info:
        parse_texts(raw, max_texts, models)
    return info.value


def test_parse_single_and_many() -> None:
    assert parse_texts(b'{"text": "hi"}', 4) == Parsed(["hi"], None, True)
    assert parse_texts(json.dumps({"texts": ["a", "b"]}).encode(), 4) == Parsed(
        ["a", "b"], None, False
    )
    assert parse_texts('{"text": "café 😀"}'.encode(), 4) == Parsed(["café 😀"], None, True)
    assert parse_texts(b'{"text": "\\ud83d\\ude00"}', 4) == Parsed(["😀"], None, True)


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
    assert parse_texts(body, 4, PAIR) == Parsed(["a"], ["X"], False, "m")
    assert parse_texts(b'{"text": "hi"}', 4).model is None  # the default model


@pytest.mark.parametrize("value", [3, None, True, ["m"], {"name": "m"}])
@pytest.mark.parametrize("models", [None, PLAIN])
def test_a_model_that_is_not_a_string_is_422(value: object, models: Any) -> None:
    for document in ({"text": "a", "model": value}, {"texts": ["a"], "model": value}):
        error = error_of(document, 4, models)
        assert error.status == 422 and "'model' must be a string" in error.message


def test_an_unknown_model_is_422_listing_the_loaded_ones() -> None:
    models = [*PLAIN, ModelDoc("other", ["A", "B"], False)]
    error = error_of({"text": "a", "model": "nope"}, 4, models)
    assert error.status == 422
    assert error.message == "unknown model 'nope'; available models: m, other"


@pytest.mark.parametrize(
    ("document", "status", "message"),
    [
        ({"text": "a", "entity": None}, 422, "'entity' must be a string, not null"),
        ({"text": "a", "entity": " "}, 422, "'entity' is empty"),
        ({"text": "a", "entity": "x" * (MAX_ENTITY_CHARS + 1)}, 422, "longer than 100"),
        ({"texts": [{"text": "a", "entity": 3}]}, 422, "'texts[0].entity' must be a string"),
        ({"texts": [{"text": ""}]}, 422, "'texts[0].text' is empty"),
        ({"texts": [{"text": "a", "x": 1}]}, 422, "may have 'entity', nothing else"),
        ({"texts": [{"entity": "a"}]}, 422, "'texts[0]' must have 'text'"),
        ({"texts": [["a"]]}, 422, "'texts[0]' must be a string or an object, not a list"),
        ({"texts": ["a", "b", "c"]}, 413, "'texts' has 3 items; the limit is 2"),
        ({"texts": ["a", "b", 3]}, 413, "the limit is 2"),  # the count first, as documented
        ({"texts": "abc"}, 422, "'texts' must be a list, not a string"),
        ({"texts": []}, 422, "'texts' must not be empty"),
        ({"texts": ["a"], "entity": "X"}, 422, "give each item its entity"),
        ({"text": "a", "entities": ["X"]}, 422, "unknown field(s) ['entities']"),
        ({"entity": "X"}, 422, "exactly one of 'text' or 'texts'"),
        ({}, 422, "exactly one of 'text' or 'texts'"),
        ({"text": "a", "texts": ["b"], "entity": "X"}, 422, "exactly one of 'text' or 'texts'"),
        ({"text": "\u3000\u2003\x1c"}, 422, "'text' is empty or only whitespace"),
        ([{"text": "a"}], 422, "must be a JSON object"),
    ],
)
def test_parse_errors_name_the_field(document: Any, status: int, message: str) -> None:
    error = error_of(document)
    assert error.status == status and message in error.message, error.message


def test_a_model_that_reads_no_entity_refuses_one() -> None:
    for document in ({"text": "a", "entity": "X"}, {"text": "a", "entity": "X", "model": "m"}):
        error = error_of(document, 4, PLAIN)
        assert error.status == 422 and "takes no entity" in error.message
    error = error_of({"texts": [{"text": "a"}]}, 4, PLAIN)  # items are strings, as documented
    assert error.status == 422 and "'texts[0]' must be a string, not an object" in error.message


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"\xc3\x28", 400, "not valid JSON"),
        (b'{"text": "caf\xe9"}', 400, "not valid UTF-8"),
        (b"[]", 422, "JSON object"),
        (b'{"text": "a"} {"text": "b"}', 400, "trailing characters"),
        (b"NaN", 400, "not valid JSON"),  # Python's json reads it; RFC 8259 does not
        (b"[" * 30000 + b"]" * 30000, 400, "nested too deeply"),
        (b'{"text": "a", "n": ' + b"9" * 5000 + b"}", 400, "not valid JSON"),
        (b'{"text": "x \\ud800 y"}', 422, "unpaired UTF-16 surrogate"),
        (b'{"text": "x \\udc00 y"}', 422, "unpaired UTF-16 surrogate"),
        (b'{"text": "x \\ud800\\ud800 y"}', 422, "unpaired UTF-16 surrogate"),
        (b'{"text": "x \\ud800', 400, "not valid JSON"),
    ],
)
def test_bodies_that_are_not_json_objects(body: bytes, status: int, message: str) -> None:
    error = error_of(body)
    assert error.status == status and message in error.message, error.message


def test_the_document_is_generated_from_the_validating_types() -> None:
    schema = Schema(7, PAIR)
    components = schema.components()
    many = components["PredictMany"]
    assert many["properties"]["texts"]["maxItems"] == 7 == schema.max_texts
    assert many["additionalProperties"] is False and many["required"] == ["texts"]
    assert components["PredictOne"]["properties"]["model"]["enum"] == ["m"]
    entity = components["PredictOne"]["properties"]["entity"]
    assert entity["maxLength"] == MAX_ENTITY_CHARS and entity["examples"]
    assert components["Prediction"]["properties"]["label"]["enum"] == ["Negative", "Positive"]
    assert components["Scores"]["required"] == ["Negative", "Positive"]
    plain = Schema(7, PLAIN).components()
    assert set(plain["PredictOne"]["properties"]) == {"text", "model"}
    assert "Item" not in plain


@pytest.mark.parametrize("models", [None, PLAIN, PAIR])
def test_examples_are_valid_requests(models: Any) -> None:
    schema = Schema(4, models)
    for example in schema.examples().values():
        parsed = schema.parse(json.dumps(example["value"]).encode())
        assert parsed.texts and all(parsed.texts)
