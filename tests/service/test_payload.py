from __future__ import annotations

import json

import numpy as np
import pytest

from service.engine import Encoded
from service.errors import ApiError
from service.payload import check_content_type, parse_texts, render


def test_parse_single_and_many() -> None:
    assert parse_texts(b'{"text": "hi"}', 4) == (["hi"], True)
    assert parse_texts(json.dumps({"texts": ["a", "b"]}).encode(), 4) == (["a", "b"], False)
    assert parse_texts('{"text": "café 😀"}'.encode(), 4) == (["café 😀"], True)


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
