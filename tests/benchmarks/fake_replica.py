"""A stand-in replica for the load-balancer stage's reload scenario: the service's reload
interface without its models, so the supported path is tested before the service has it.

Serves the bundle folder in SENTIMENT_BUNDLE on SENTIMENT_PORT: `POST /predict` answers with
the bundle's labels and `x-model-version: <name>@<12 hex of manifest.json's sha256>`, `/ready`
200. SIGHUP re-reads the folder (the interface: new answers carry the new version), unless
`--ignore-sighup`, which catches the signal and changes nothing.
Run: python tests/benchmarks/fake_replica.py [--ignore-sighup]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class Model:
    """What the folder holds now: name, labels and version."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.load()

    def load(self) -> None:
        config = json.loads((self.folder / "config.json").read_text())
        digest = hashlib.sha256((self.folder / "manifest.json").read_bytes()).hexdigest()
        self.name = str(config.get("model_name", self.folder.name))
        self.labels = list(config["labels"])
        self.version = f"{self.name}@{digest[:12]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ignore-sighup", action="store_true")
    args = parser.parse_args()
    model = Model(Path(os.environ["SENTIMENT_BUNDLE"]))

    def on_sighup(signum: int, frame: FrameType | None) -> None:
        if not args.ignore_sighup:
            model.load()

    async def predict(request: Request) -> JSONResponse:
        await request.body()
        scores = {label: round(1 / len(model.labels), 6) for label in model.labels}
        body = {"label": model.labels[0], "score": scores[model.labels[0]], "scores": scores}
        headers = {"x-model-version": model.version}
        return JSONResponse({**body, "model": model.name}, headers=headers)

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/ready", ready)])
    signal.signal(signal.SIGHUP, on_sighup)
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["SENTIMENT_PORT"]), log_level="warning")


if __name__ == "__main__":
    main()
