from __future__ import annotations

import numpy as np
import pytest

from service.engine import Encoded
from service.errors import ApiError
from service.payload import check_content_type, check_entities, render
from service.schema import Parsed


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
