"""A small real server for harness tests: the tiny bundle behind the peers' handler shape.

`--fail-every N` answers 503 to every Nth request and `--sleep-ms` delays every answer, so tests
can check that the harness counts errors and bounds slow runs in time.
Run: python tests/benchmarks/tiny_server.py --bundle DIR --port PORT [--fail-every N] [--sleep-ms MS]
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks import engine
from benchmarks.peers.common import base_parser, make_app, scores_to_result, serve
from service.bundle import load_bundle
from service.engine import pad_right


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--sleep-ms", type=float, default=0.0)
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    tokenizer = engine.load_tokenizer(bundle.tokenizer_path, bundle.max_length)
    session = engine.make_session(bundle.model_path, threads=1)

    def predict(text: str) -> dict[str, object]:
        ids, mask = pad_right([tokenizer.encode(text).ids], 0)
        logits = session.run(None, engine.make_feed(session, ids, mask))[0][0]
        probs = np.exp(logits - logits.max())
        return scores_to_result(list(bundle.labels), (probs / probs.sum()).tolist())

    app = make_app(predict)
    counter = itertools.count(1)
    plain = next(r for r in app.routes if getattr(r, "path", "") == "/predict")

    async def predict_route(request: Request) -> JSONResponse:
        if args.sleep_ms:
            await asyncio.sleep(args.sleep_ms / 1000)
        if args.fail_every and next(counter) % args.fail_every == 0:
            return JSONResponse({"error": "injected failure"}, status_code=503)
        response = await plain.endpoint(request)  # type: ignore[attr-defined]
        assert isinstance(response, JSONResponse)
        return response

    app.router.routes[app.router.routes.index(plain)] = Route(
        "/predict", predict_route, methods=["POST"]
    )
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
