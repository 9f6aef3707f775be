"""The image's start command, run outside Docker exactly as the Dockerfile states it.

The ENTRYPOINT/CMD argv and the SENTIMENT_* environment come from the Dockerfile; only the
interpreter (this venv's python for the image's), the bind address, the port and the bundle path
change. The app folder holds `service/` alone, as in the image.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.ports import free_port
from service.settings import PREFIX
from tests.deploy.conftest import REPO, Dockerfile

pytestmark = pytest.mark.slow  # starts the service as a process
START_TIMEOUT_S = 60.0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def status(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def with_host_python(argv: list[str]) -> list[str]:
    assert argv and argv[0] == "python", f"expected the image's `python`, got {argv}"
    return [sys.executable, *argv[1:]]


def start_command(dockerfile: Dockerfile) -> list[str]:
    runtime = dockerfile.runtime
    argv = (runtime.exec_form("ENTRYPOINT") or []) + (runtime.exec_form("CMD") or [])
    return with_host_python(argv)


def healthcheck_command(dockerfile: Dockerfile) -> list[str]:
    check = dockerfile.runtime.last("HEALTHCHECK")
    assert check is not None
    return with_host_python(json.loads(check.args.split(" CMD ", 1)[1]))


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """/app as in the image: only the service package."""
    app = tmp_path / "app"
    shutil.copytree(REPO / "service", app / "service", ignore=shutil.ignore_patterns("__pycache__"))
    return app


def image_env(dockerfile: Dockerfile, app: Path, bundle: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith((PREFIX, "PYTHON", "PROMETHEUS_MULTIPROC"))
    }
    env |= {k: v for k, v in dockerfile.runtime.env().items() if k.startswith((PREFIX, "PYTHON"))}
    env |= {
        "PYTHONPATH": str(app),
        "SENTIMENT_HOST": "127.0.0.1",
        "SENTIMENT_PORT": str(free_port()),
        "SENTIMENT_BUNDLES": str(bundle),
        **extra,
    }
    return env


def launch(dockerfile: Dockerfile, app: Path, env: dict[str, str]) -> Server:
    log = app.parent / "server.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            start_command(dockerfile), cwd=app, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    return Server(process, int(env["SENTIMENT_PORT"]), env, log)


@pytest.fixture
def server_factory() -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:  # never leave a server behind, whatever failed
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"exited {server.process.returncode} before ready:\n{server.logs()}")
        try:
            if status(server.url("/ready"))[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"/ready not 200 within {START_TIMEOUT_S:.0f} s:\n{server.logs()}")


def test_image_command_serves_then_drains_on_sigterm(
    dockerfile: Dockerfile, app_dir: Path, tiny_bundle: Path, server_factory: list[Server]
) -> None:
    env = image_env(dockerfile, app_dir, tiny_bundle, SENTIMENT_DRAIN_DELAY_S="2")
    server = launch(dockerfile, app_dir, env)
    server_factory.append(server)
    wait_ready(server)

    assert status(server.url("/health"))[0] == 200
    code, body = status(server.url("/predict"), json.dumps({"text": "I love this game"}).encode())
    assert code == 200, body
    assert json.loads(body)["label"] in {"Negative", "Positive"}
    probe = subprocess.run(healthcheck_command(dockerfile), env=env, timeout=10)
    assert probe.returncode == 0, "the image's HEALTHCHECK fails against a healthy server"

    # SIGTERM straight to the process the argv started (as Docker's exec form delivers it):
    # it must turn /ready to 503 while still listening, then exit 0.
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2.0
    seen = 0
    while time.monotonic() < deadline and seen != 503:
        seen = status(server.url("/ready"))[0]
        time.sleep(0.05)
    assert seen == 503, "/ready did not report draining after SIGTERM"
    assert server.process.wait(timeout=30) == 0, server.logs()
    probe = subprocess.run(healthcheck_command(dockerfile), env=env, timeout=10)
    assert probe.returncode != 0, "HEALTHCHECK passes with no server"


def test_image_command_refuses_an_altered_bundle(
    dockerfile: Dockerfile,
    app_dir: Path,
    tiny_bundle: Path,
    server_factory: list[Server],
    tmp_path: Path,
) -> None:
    """The manifest is verified at start: one flipped byte in the model and it never serves."""
    altered = shutil.copytree(tiny_bundle, tmp_path / "altered")
    model = altered / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    server = launch(dockerfile, app_dir, image_env(dockerfile, app_dir, altered))
    server_factory.append(server)
    code = server.process.wait(timeout=START_TIMEOUT_S)
    assert code != 0
    assert "model.onnx" in server.logs() and "manifest" in server.logs()
