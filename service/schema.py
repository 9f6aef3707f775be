"""The API's request and response types, defined once (msgspec).

/predict validates its bodies with these types (`Schema.parse`), and /openapi.json is generated
from the very same types (`Schema.components`), so the document and the validator cannot drift.
The parts that depend on the running service (the text limit, the loaded models' names and
labels, whether any model reads entities) are filled in when a `Schema` is built, once per app.

msgspec was chosen by measurement on real tweets (service/README.md, *One schema*): faster than
the hand-written json.loads checks it replaced, faster than pydantic v2 on many-text bodies and
about even on one text, and without dependencies in the serving image.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from service.errors import ApiError

MAX_ENTITY_CHARS = 100
# The characters Python's str.isspace() accepts, as a class that also reads as ECMA-262: a text
# must contain one character outside it (the server treats whitespace-only text as empty).
NOT_ONLY_SPACE = (
    "[^\\t-\\r\\u001c- \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
)
EXAMPLE_TEXT = "the new patch is awesome, servers finally stable"
EXAMPLE_ENTITY = "Overwatch"

Text = Annotated[
    str,
    Meta(
        min_length=1,
        pattern=NOT_ONLY_SPACE,
        description="A tweet. Cut to the model's max length in tokens (then `truncated`).",
        examples=[EXAMPLE_TEXT],
    ),
]
Entity = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_ENTITY_CHARS,
        pattern=NOT_ONLY_SPACE,
        description="What the sentiment is about (a brand, a game): entity-pair models only.",
        examples=[EXAMPLE_ENTITY],
    ),
]
Probability = Annotated[float, Meta(ge=0, le=1)]
MODEL_DOC = (
    "The model to use for the whole request (a loaded bundle's name, see /info `models`); "
    "absent: the default model (/info `default_model`). Unknown: 422."
)


class Item(Struct, forbid_unknown_fields=True):
    """A `texts` item with its entity (entity-pair models)."""

    text: Text
    entity: Entity | UnsetType = UNSET


class ErrorBody(Struct):
    type: str
    message: str


class Error(Struct):
    """Every error: a stable machine-readable `type` and a human message."""

    error: ErrorBody


class Status(Struct):
    status: str


LoadedAt = Annotated[str, Meta(description="When the model was loaded (UTC, ISO 8601)")]


class ReloadedModel(Struct):
    """One model name after a reload: what now answers under it."""

    name: str
    bundle_sha256: str
    loaded_at: LoadedAt
    changed: Annotated[bool, Meta(description="This reload swapped in a new bundle")]


class Reloaded(Struct):
    """POST /admin/reload: every model name as it serves now (`changed`: any of them)."""

    changed: bool
    models: list[ReloadedModel]


class ModelInfo(Struct):
    """One loaded model, as /info lists it."""

    name: str
    labels: list[str]
    max_length: int
    text_pair: bool
    bundle_sha256: str
    loaded_at: LoadedAt
    manifest: dict[str, Any]
    max_batch: int
    batch_drift: float


class Info(Struct):
    """/info: every model under `models`; the top-level model fields describe the default."""

    model_name: str
    labels: list[str]
    max_length: int
    text_pair: bool
    bundle_sha256: str
    manifest: dict[str, Any]
    default_model: str
    models: list[ModelInfo]
    versions: dict[str, str]
    limits: dict[str, float]
    runtime: dict[str, Any]


@dataclass(frozen=True)
class ModelDoc:
    """What the schema needs to know about one loaded model."""

    name: str
    labels: Sequence[str]
    text_pair: bool


@dataclass(frozen=True, slots=True)
class Parsed:
    """A valid predict body: its texts, their entities, its form and the model it names
    (None: the default model)."""

    texts: list[str]
    entities: list[str] | None  # None: no entity given; "" for the items that came without one
    single: bool
    model: str | None = None


class Schema:
    """The request/response types for one service configuration (built once per app)."""

    def __init__(self, max_texts: int, models: Sequence[ModelDoc] | None = None) -> None:
        self.max_texts = max_texts
        self.models = models
        # Before the models are known, entities are documented (some model may read them).
        self.entities = models is None or any(model.text_pair for model in models)
        model_type = _enum([m.name for m in models]) if models else str
        self.model_type: Any = Annotated[model_type, Meta(description=MODEL_DOC)]
        self.one, self.many = self._requests()
        self.prediction, self.predictions = self._responses()
        self._decoder = msgspec.json.Decoder()

    def _requests(self) -> tuple[type[Struct], type[Struct]]:
        unset: Any = UNSET
        one: list[Any] = [("text", Text)]
        if self.entities:
            one.append(("entity", Entity | UnsetType, unset))
        one.append(("model", self.model_type | UnsetType, unset))
        item: Any = Text | Item if self.entities else Text
        texts: Any = Annotated[list[item], Meta(min_length=1, max_length=self.max_texts)]
        many: list[Any] = [("texts", texts), ("model", self.model_type | UnsetType, unset)]
        options: dict[str, Any] = {"forbid_unknown_fields": True, "module": __name__}
        return (
            msgspec.defstruct("PredictOne", one, **options),
            msgspec.defstruct("PredictMany", many, **options),
        )

    def _responses(self) -> tuple[type[Struct], type[Struct]]:
        unset: Any = UNSET
        labels = list(dict.fromkeys(label for m in self.models or () for label in m.labels))
        label: Any = _enum(labels) if labels else str
        prediction = msgspec.defstruct(
            "Prediction",
            [
                ("label", label),
                ("score", Probability),
                ("scores", self._scores(labels)),
                ("truncated", bool),
                ("model", Annotated[str | UnsetType, Meta(description="The model that answered")], unset),
            ],
            forbid_unknown_fields=True,
            module=__name__,
        )  # fmt: skip
        many = msgspec.defstruct(
            "Predictions",
            [("model", str), ("predictions", list[prediction])],  # type: ignore[valid-type]
            forbid_unknown_fields=True,
            module=__name__,
        )
        return prediction, many

    def _scores(self, labels: list[str]) -> Any:
        """Every label a score; the labels all models share are always present."""
        if not labels:
            return dict[str, Probability]
        models = self.models or ()
        unset: Any = UNSET
        fields: list[Any] = []
        for i, label in enumerate(labels):
            shared = all(label in m.labels for m in models)
            fields.append((f"l{i}", Probability) if shared else (f"l{i}", Probability, unset))
        rename = {f"l{i}": label for i, label in enumerate(labels)}
        return msgspec.defstruct(
            "Scores",
            fields,
            rename=rename,
            kw_only=True,
            forbid_unknown_fields=True,
            module=__name__,
        )

    # ------------------------------------------------------------------------- validation

    def parse(self, body: bytes) -> Parsed:
        """The texts (and entities, and model) of a predict body.

        400: not UTF-8 or not JSON; 422: wrong shape, type, empty text, unknown model; 413: too
        many texts. Whether the chosen model reads entities is `check_entities`'s business.
        """
        document = self._decode(body)
        if not isinstance(document, dict):
            raise ApiError(422, 'body must be a JSON object: {"text": ...} or {"texts": [...]}')
        kind = self.many if "texts" in document else self.one
        _check_keys(document)
        try:
            request: Any = msgspec.convert(document, kind)
        except msgspec.ValidationError as exc:
            raise self._explain(str(exc), document) from None
        model = None if request.model is UNSET else str(request.model)
        if kind is self.one:
            entity = getattr(request, "entity", UNSET)
            return Parsed([request.text], None if entity is UNSET else [entity], True, model)
        return _many(request.texts, model)

    def _decode(self, body: bytes) -> Any:
        try:
            return self._decoder.decode(body)
        except UnicodeDecodeError as exc:
            raise ApiError(400, f"body is not valid UTF-8 ({exc.reason})") from None
        except RecursionError:
            raise ApiError(400, "body is not valid JSON: nested too deeply") from None
        except msgspec.MsgspecError as exc:  # DecodeError, and integers out of range
            if _only_lone_surrogates(body):
                raise ApiError(422, "body contains an unpaired UTF-16 surrogate escape") from None
            raise ApiError(400, f"body is not valid JSON: {exc}") from None

    def _explain(self, message: str, document: dict[str, Any]) -> ApiError:
        """msgspec's message as this API's: same statuses, the field named as sent."""
        found = _MESSAGE.fullmatch(message)
        what, path = (found[1], found[2] or "") if found else (message, "")
        where = path.lstrip(".") or "body"
        for pattern, explain in _EXPLAIN:
            matched = pattern.fullmatch(what)
            if matched:
                return explain(self, matched, where, document)
        return ApiError(422, f"'{where}': {what}")

    # ------------------------------------------------------------------------------ document

    def components(self, admin: bool = False) -> dict[str, Any]:
        """JSON Schema 2020-12 components of every request and response type (`admin`: the
        admin routes' too)."""
        types = [self.one, self.many, self.prediction, self.predictions, Error, Status, Info]
        types += [Reloaded] if admin else []
        _, components = msgspec.json.schema_components(
            types, ref_template="#/components/schemas/{name}"
        )
        return components

    def examples(self) -> dict[str, Any]:
        """Request bodies for the interactive page: valid by construction (they are checked)."""
        one: dict[str, Any] = {"text": EXAMPLE_TEXT}
        items: list[Any] = ["worst update ever, servers down again", "love it"]
        if self.entities:
            one["entity"] = EXAMPLE_ENTITY
            items[1] = {"text": "love it", "entity": "Xbox"}
        examples = {
            "one": {"summary": "One text", "value": one},
            "many": {"summary": "Several texts, answered in order", "value": {"texts": items}},
        }
        for example in examples.values():
            self.parse(msgspec.json.encode(example["value"]))
        return examples


def _enum(values: Sequence[str]) -> Any:
    return Literal.__getitem__(tuple(values))


def _many(items: list[Any], model: str | None) -> Parsed:
    texts, entities, given = [], [], False
    for item in items:
        if isinstance(item, str):
            texts.append(item)
            entities.append("")
            continue
        texts.append(item.text)
        given = given or item.entity is not UNSET
        entities.append("" if item.entity is UNSET else item.entity)
    return Parsed(texts, entities if given else None, False, model)


def _check_keys(document: dict[str, Any]) -> None:
    """The one rule a struct cannot say: exactly one of `text` and `texts`."""
    if ("text" in document) != ("texts" in document):
        return
    unknown = sorted(document.keys() - {"text", "texts", "entity", "model"})
    if unknown:
        raise ApiError(422, f"unknown field(s) {unknown}; send 'text' or 'texts' (and 'model')")
    raise ApiError(422, "send exactly one of 'text' or 'texts'")


def _only_lone_surrogates(body: bytes) -> bool:
    """Whether the body is JSON but for unpaired surrogate escapes (msgspec refuses those,
    Python's json reads them): 422 like any other text no tokenizer can take, not 400."""
    fixed, count = _LONE_SURROGATE.subn(rb"\\ufffd", body)
    if not count:
        return False
    try:
        msgspec.json.decode(fixed)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return False
    return True


def unknown_model(name: str, available: Sequence[str]) -> ApiError:
    """422 for a model name no loaded bundle has, listing the ones that are loaded."""
    shown = name if len(name) <= 100 else name[:100] + "..."
    return ApiError(422, f"unknown model {shown!r}; available models: {', '.join(available)}")


# ------------------------------------------------------------------- msgspec's messages, ours

_LONE_SURROGATE = re.compile(
    rb"(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    rb"|\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
)
_MESSAGE = re.compile(r"(.*?)(?: - at `\$(.*)`)?", re.DOTALL)
_JSON_TYPES = {"null": "null", "array": "a list", "object": "an object", "bool": "a boolean"}
_JSON_TYPES |= {"str": "a string", "int": "a number", "float": "a number"}
_Explain = Callable[["Schema", re.Match[str], str, dict[str, Any]], ApiError]


def _unknown_field(schema: Schema, m: re.Match[str], where: str, doc: dict[str, Any]) -> ApiError:
    field = m[1]
    if field == "entity" and not schema.entities:
        model = doc.get("model")
        which = f"model {model!r}" if isinstance(model, str) else "this model"
        return ApiError(422, f"{which} takes no entity: send only 'text' or 'texts'")
    if field == "entity" and where == "body" and "texts" in doc:
        return ApiError(
            422, 'with \'texts\', give each item its entity: {"text": ..., "entity": ...}'
        )
    if where != "body":
        return ApiError(
            422, f"'{where}' must have 'text' and may have 'entity', nothing else ({field!r})"
        )
    return ApiError(422, f"unknown field(s) [{field!r}]; send 'text' or 'texts' (and 'model')")


def _missing(schema: Schema, m: re.Match[str], where: str, doc: dict[str, Any]) -> ApiError:
    return ApiError(422, f"'{where}' must have 'text' and may have 'entity', nothing else")


def _wrong_type(schema: Schema, m: re.Match[str], where: str, doc: dict[str, Any]) -> ApiError:
    expected, got = m[1], _JSON_TYPES.get(m[2], m[2])
    if expected == "array":
        return ApiError(422, f"'{where}' must be a list, not {got}")
    if expected == "str | object":
        return ApiError(422, f"'{where}' must be a string or an object, not {got}")
    if where == "model":
        return ApiError(422, f"'model' must be a string (a model's name), not {got}")
    return ApiError(422, f"'{where}' must be a string, not {got}")


def _bad_model(schema: Schema, m: re.Match[str], where: str, doc: dict[str, Any]) -> ApiError:
    return unknown_model(str(doc.get("model")), [model.name for model in schema.models or ()])


def _too_few(schema: Schema, m: re.Match[str], where: str, doc: dict[str, Any]) -> ApiError:
    return ApiError(422, f"'{where}' must not be empty")


def _too_many(schema: Schema, m: re.Match[str], where: str, doc: dict[str, Any]) -> ApiError:
    count = len(doc.get("texts") or ())
    return ApiError(413, f"'texts' has {count} items; the limit is {schema.max_texts}")


def _empty(schema: Schema, m: re.Match[str], where: str, doc: dict[str, Any]) -> ApiError:
    return ApiError(422, f"'{where}' is empty or only whitespace")


def _long(schema: Schema, m: re.Match[str], where: str, doc: dict[str, Any]) -> ApiError:
    return ApiError(422, f"'{where}' is longer than {m[1]} characters")


_EXPLAIN: list[tuple[re.Pattern[str], _Explain]] = [
    (re.compile(r"Object contains unknown field `(.*)`"), _unknown_field),
    (re.compile(r"Object missing required field `(.*)`"), _missing),
    (re.compile(r"Expected `(.*)`, got `(\w+)`"), _wrong_type),
    (re.compile(r"Invalid enum value .*"), _bad_model),
    (re.compile(r"Expected `array` of length >= \d+"), _too_few),
    (re.compile(r"Expected `array` of length <= \d+"), _too_many),
    (re.compile(r"Expected `str` (?:of length >= 1|matching regex .*)", re.DOTALL), _empty),
    (re.compile(r"Expected `str` of length <= (\d+)"), _long),
]
