"""µs per /predict body for the request validator: the service's (msgspec, service.schema)
against pydantic v2 with the same constraints (when installed) and, with --baseline REV, the
hand-written validator of an older commit (read with `git show`). Real tweets and entities.

    nice -n 19 .venv/bin/python tools/bench_validation.py --baseline 6baea07 --iterations 3000

pydantic is not a project dependency: `.venv/bin/pip install pydantic==2.14.4` to include it.

Why: the issue asks that one schema for validation and OpenAPI does not lower throughput, so
the library was chosen by this measurement (figures in service/README.md, *One schema*).
"""

import argparse
import csv
import json
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from service.schema import MAX_ENTITY_CHARS, NOT_ONLY_SPACE, ModelDoc, Schema

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "twitter_entity" / "twitter_validation.csv"
FALLBACK = ["the new patch is awesome, servers finally stable", "worst update ever"] * 32


def bodies(path: Path) -> tuple[bytes, bytes]:
    """One tweet + entity, and 64 of them, as clients send them."""
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [(r[1], r[3]) for r in csv.reader(handle) if len(r) > 3 and r[3].strip()][:64]
    else:
        rows = [("Overwatch", text) for text in FALLBACK]
    one = json.dumps({"text": rows[0][1], "entity": rows[0][0]}).encode()
    many = json.dumps({"texts": [{"text": t, "entity": e} for e, t in rows]}).encode()
    return one, many


def pydantic_parser() -> Callable[[bytes], Any] | None:
    try:
        from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter
    except ImportError:
        return None
    Text = Annotated[str, Field(min_length=1, pattern=NOT_ONLY_SPACE)]
    Entity = Annotated[
        str, Field(min_length=1, max_length=MAX_ENTITY_CHARS, pattern=NOT_ONLY_SPACE)
    ]

    class Item(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: Text  # type: ignore[valid-type]
        entity: Entity | None = None  # type: ignore[valid-type]

    class One(Item):
        model_config = ConfigDict(extra="forbid", protected_namespaces=())
        model: str | None = None

    class Many(BaseModel):
        model_config = ConfigDict(extra="forbid", protected_namespaces=())
        texts: Annotated[list[Text | Item], Field(min_length=1, max_length=64)]  # type: ignore[valid-type]
        model: str | None = None

    def pick(value: Any) -> str:
        return "many" if isinstance(value, dict) and "texts" in value else "one"

    adapter: Any = TypeAdapter(
        Annotated[Annotated[One, Tag("one")] | Annotated[Many, Tag("many")], Discriminator(pick)]
    )
    return adapter.validate_json  # type: ignore[no-any-return]


def baseline_parser(revision: str) -> Callable[[bytes], Any]:
    source = subprocess.run(
        ["git", "show", f"{revision}:service/payload.py"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    module = types.ModuleType("baseline_payload")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, "baseline_payload.py", "exec"), module.__dict__)
    return lambda body: module.parse_texts(body, 64)


def per_call_us(parse: Callable[[bytes], Any], body: bytes, iterations: int) -> float:
    """Best of 5 rounds (the least disturbed by other processes)."""
    parse(body)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iterations):
            parse(body)
        best = min(best, (time.perf_counter() - start) / iterations)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--baseline", help="a git revision whose payload.parse_texts to time")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    one, many = bodies(args.data)
    schema = Schema(64, [ModelDoc("sentiment-binary", ["Negative", "Positive"], True)])
    parsers: dict[str, Callable[[bytes], Any] | None] = {
        "msgspec (service.schema)": schema.parse,
        "pydantic v2 (validate_json)": pydantic_parser(),
    }
    if args.baseline:
        parsers[f"hand-written ({args.baseline})"] = baseline_parser(args.baseline)
    print(f"bodies: one text {len(one)} B, 64 texts {len(many)} B; {args.iterations} calls x 5")
    for name, parse in parsers.items():
        if parse is None:
            print(f"{name:34s} not installed")
            continue
        single, batch = (per_call_us(parse, body, args.iterations) for body in (one, many))
        print(f"{name:34s} one text {single:7.2f} µs   64 texts {batch:7.2f} µs")


if __name__ == "__main__":
    main()
