"""GET /docs: the interactive API page (Swagger UI) over /openapi.json, served offline.

The assets come from the PyPI package swagger-ui-bundle-v2 (swagger-ui's dist files), not a CDN:
the service runs without internet. Only the files the page needs are served (a fixed list, no
path from the request reaches the file system), and a Content-Security-Policy keeps the page on
this origin. URLs are relative, so the page also works behind a path prefix.
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route
from swagger_ui_bundle import swagger_ui_path

ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "index.css", "favicon-32x32.png")
CACHE = {"Cache-Control": "public, max-age=86400"}
POLICY = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
    )
}
# validatorUrl null: swagger-ui would otherwise ask an online validator about the document.
INIT_JS = """window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  displayRequestDuration: true,
});
"""
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Tweet sentiment API</title>
  <link rel="stylesheet" href="docs/assets/swagger-ui.css">
  <link rel="stylesheet" href="docs/assets/index.css">
  <link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/assets/swagger-ui-bundle.js"></script>
  <script src="docs/assets/init.js"></script>
</body>
</html>
"""


def docs_routes(assets: Path | None = None) -> list[Route]:
    """/docs and its assets (`assets`: swagger-ui's dist folder; default: the package's)."""
    folder = Path(str(swagger_ui_path)) if assets is None else assets

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE, headers=POLICY)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "init.js":
            return Response(INIT_JS, media_type="text/javascript", headers=CACHE)
        if name not in ASSETS:
            raise HTTPException(404)  # answered as JSON by the app's handler
        return FileResponse(folder / name, headers=CACHE)

    return [
        Route("/docs", page, methods=["GET"]),
        Route("/docs/assets/{name}", asset, methods=["GET"]),
    ]
