"""The page that shows the OpenAPI document: Swagger UI, whose files come from the swagger-ui-bundle-v2
package (Swagger UI 5, the first to read OpenAPI 3.1), so that the page works with no network.

Its Content-Security-Policy lets the browser load nothing from elsewhere: were a future Swagger UI to
reach for another site (a validator badge, a font), it would fail visibly rather than leak requests."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from swagger_ui_bundle import swagger_ui_path

# The files the page uses, and the media type each is served as.
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}

ASSETS_DIR = Path(str(swagger_ui_path))

_START = """window.onload = () => {{
  window.ui = SwaggerUIBundle({{
    url: {spec_url},
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  }});
}};"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>mini-iaas API</title>
  <link rel="stylesheet" href="{css}">
  <link rel="icon" type="image/png" href="{icon}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{js}"></script>
  <script>{start}</script>
</body>
</html>
"""


def page(spec_url: str, asset_url: dict[str, str]) -> tuple[str, str]:
    """The page's HTML and its Content-Security-Policy (which allows the one inline script by hash)."""
    start = _START.format(spec_url=json.dumps(spec_url))
    html = _PAGE.format(
        css=asset_url["swagger-ui.css"],
        icon=asset_url["favicon-32x32.png"],
        js=asset_url["swagger-ui-bundle.js"],
        start=start,
    )
    digest = base64.b64encode(hashlib.sha256(start.encode()).digest()).decode()
    policy = (
        f"default-src 'none'; script-src 'self' 'sha256-{digest}'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )
    return html, policy
