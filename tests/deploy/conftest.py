"""Readers for the deploy artifacts (Dockerfile, .dockerignore, k8s manifests).

No Docker engine runs in CI, so the tests read the Dockerfile the way the engine would (line
continuations, comments, stages, exec-form JSON) and check what the image would contain. The
`tiny_bundle` the start-command tests serve comes from tests/conftest.py.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def flags(self) -> dict[str, str]:
        """Leading `--name=value` flags (COPY --from=..., HEALTHCHECK --interval=...)."""
        return dict(re.findall(r"(?:^|\s)--([\w-]+)=(\S+)", self.args.split(" CMD ")[0]))


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def exec_form(self, keyword: str) -> list[str] | None:
        """The JSON argv of the last ENTRYPOINT/CMD, or None; shell form fails the test."""
        found = self.last(keyword)
        if found is None:
            return None
        argv = json.loads(found.args)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), found.args
        return argv

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for instruction in self.all("ENV"):
            tokens = shlex.split(instruction.args)
            if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
                out[tokens[0]] = " ".join(tokens[1:])
                continue
            for token in tokens:
                key, _, value = token.partition("=")
                out[key] = value
        return out


@dataclass(frozen=True)
class Dockerfile:
    args: dict[str, str]  # ARGs declared before the first FROM, with their defaults
    stages: tuple[Stage, ...]

    @property
    def runtime(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def expand(self, value: str) -> str:
        """`value` with ${NAME} / $NAME replaced by the global ARG defaults (as a build without
        --build-arg would)."""
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args[m[1] or m[2]], value)


def logical_lines(text: str) -> Iterator[str]:
    """Join `\\` continuations and drop comment lines, as the Docker parser does."""
    pending: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        yield " ".join(part for part in pending if part)
        pending = []
    if pending:
        yield " ".join(pending)


def parse_dockerfile(text: str) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    current: list[Instruction] | None = None
    base, name = "", None
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            if current is not None:
                stages.append(Stage(base, name, tuple(current)))
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            current = []
        elif current is None:
            if keyword == "ARG":
                key, _, default = rest.partition("=")
                args[key] = default
        else:
            current.append(Instruction(keyword, rest))
    if current is not None:
        stages.append(Stage(base, name, tuple(current)))
    return Dockerfile(args, tuple(stages))


def dockerignore_patterns(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob (Go filepath.Match plus `**`) as a regex."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1].replace("[!", "[^"), end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether the build context leaves `path` out: the last matching pattern wins, and a
    pattern that matches a parent folder matches everything inside it."""
    excluded = False
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = posixpath.normpath(raw[1:] if negate else raw).lstrip("/")
        regex = _pattern_regex(pattern)
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    return parse_dockerfile((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="session")
def manifests() -> dict[str, dict[str, Any]]:
    """Every k8s object under deploy/k8s, by kind (one object per kind)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc["kind"] not in objects, f"two {doc['kind']} objects"
                objects[doc["kind"]] = doc
    return objects
