"""/v1/openapi.json and /v1/docs: the OpenAPI document and a page to browse it. Both are open (no
token), and the page's files come from this API, so it works where there is no network."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, send_from_directory, url_for
from flask.typing import ResponseReturnValue

from api.openapi.document import document
from api.openapi.page import ASSETS, ASSETS_DIR, page
from common.errors import NotFound

bp = Blueprint("docs", __name__, url_prefix="/v1")

_ASSET_MAX_AGE_S = 24 * 3600


@bp.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    return jsonify(document())


@bp.get("/docs")
def docs_page() -> ResponseReturnValue:
    html, policy = page(
        url_for("docs.openapi_json"), {name: url_for("docs.docs_asset", asset=name) for name in ASSETS}
    )
    return Response(html, mimetype="text/html", headers={"Content-Security-Policy": policy})


@bp.get("/docs/<asset>")
def docs_asset(asset: str) -> ResponseReturnValue:
    if asset not in ASSETS:
        raise NotFound(f"The docs page has no file {asset!r}.", asset=asset)
    return send_from_directory(ASSETS_DIR, asset, mimetype=ASSETS[asset], max_age=_ASSET_MAX_AGE_S)
