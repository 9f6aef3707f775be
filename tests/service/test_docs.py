"""/docs: the interactive page, its offline assets, and a real "try it out" in headless Chromium.

The browser test drives Debian's `chromium` over the DevTools protocol (websocket-client): the
page must render the /predict operation from the served document, and "Try it out" → "Execute"
with the document's first example must come back 200 with a prediction. A screenshot is kept in
artifacts/ (gitignored). Without chromium the test skips, except under CI, where it fails.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websocket
from starlette.testclient import TestClient

from benchmarks.ports import free_port
from service import Settings, create_app

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    # Loopback only: every other host name fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
OP = "#operations-default-predict"


def test_the_page_loads_its_assets_from_this_server(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("docs/assets/") for a in assets), assets  # no CDN
    for asset in assets:
        response = client.get("/" + asset)
        assert response.status_code == 200 and response.content, asset
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
    assert 'url: "openapi.json"' in client.get("/docs/assets/init.js").text
    metrics = client.get("/metrics").text
    assert 'route="/docs/assets"' in metrics and 'route="/docs"' in metrics


def test_only_the_listed_assets_are_served(client: TestClient) -> None:
    for name in ("swagger-ui.js.map", "..%2F__init__.py", "index.html", "x"):
        response = client.get(f"/docs/assets/{name}")
        assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


def test_the_document_carries_labels_and_examples(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert set(body["examples"]) == {"one", "many"}
    for example in body["examples"].values():
        answer = client.post("/predict", json=example["value"])
        assert answer.status_code == 200, answer.text
    labels = document["components"]["schemas"]["Prediction"]["properties"]["label"]["enum"]
    assert labels == ["Negative", "Positive"]


# ------------------------------------------------------------------------------- browser


def chromium() -> str:
    """The browser, or a skip (a failure under CI: .ci/run installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium not found under CI: .ci/run must install it (apt-get install)")
    pytest.skip("chromium not found (Debian: apt-get install chromium)")


@pytest.fixture
def server(make_settings: Callable[..., Settings]) -> Iterator[str]:
    """The app on a real loopback port (uvicorn in a thread)."""
    port = free_port()
    config = uvicorn.Config(
        create_app(make_settings()), host="127.0.0.1", port=port, log_level="warning"
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(30)


class DevTools:
    """A minimal DevTools-protocol client: one page, commands answered in order."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        call = next(self.ids)
        self.ws.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:  # events arrive in between; skip them
            message = json.loads(self.ws.recv())
            if message.get("id") == call:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for: {expression}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    """Headless Chromium with a fresh profile, reached over its DevTools port."""
    profile = tmp_path / "profile"
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.is_file() and active.read_text().strip()):
            assert process.poll() is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium opened no DevTools port"
            time.sleep(0.1)
        port = active.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            pages = [t for t in json.load(answer) if t["type"] == "page"]
        devtools = DevTools(pages[0]["webSocketDebuggerUrl"])
        yield devtools
        devtools.ws.close()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.slow  # a browser against a real server
def test_try_it_out_returns_a_prediction(server: str, browser: DevTools) -> None:
    browser.send("Page.enable")
    browser.send("Page.navigate", url=server + "/docs")
    browser.wait_for(f"!!document.querySelector('{OP}')")
    title = browser.evaluate("document.querySelector('.info .title')?.textContent")
    assert title and "Tweet sentiment API" in title
    browser.evaluate(f"document.querySelector('{OP} .opblock-summary-control').click()")
    browser.wait_for(f"!!document.querySelector('{OP} .try-out__btn')")
    browser.evaluate(f"document.querySelector('{OP} .try-out__btn').click()")
    browser.wait_for(f"!!document.querySelector('{OP} .execute')")
    sent = browser.evaluate(f"document.querySelector('{OP} textarea.body-param__text')?.value")
    assert sent and json.loads(sent)["text"], sent  # the document's first example
    browser.evaluate(f"document.querySelector('{OP} .execute').click()")
    status = browser.wait_for(
        f"document.querySelector('{OP} .live-responses-table tr.response .response-col_status')?.textContent"
    )
    answer = browser.wait_for(
        f"document.querySelector('{OP} .live-responses-table tr.response .microlight')?.textContent"
    )
    shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "docs-try-it-out.png").write_bytes(base64.b64decode(shot["data"]))
    assert status.strip() == "200", status
    prediction = json.loads(answer)
    assert prediction["label"] in ("Negative", "Positive") and prediction["model"] == "tiny-test"
