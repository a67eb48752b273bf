"""/v1/openapi.json and /v1/docs: the OpenAPI document and a page to browse it. Both are open (no
token), and the page's files come from this API, so it works where there is no network."""

from __future__ import annotations

from functools import cache

from flask import Blueprint, Response, jsonify, request, url_for
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
    response = Response(_asset_bytes(asset), mimetype=ASSETS[asset])
    response.cache_control.public = True
    response.cache_control.max_age = _ASSET_MAX_AGE_S
    response.add_etag()
    return response.make_conditional(request)


@cache
def _asset_bytes(name: str) -> bytes:
    """Read once (some 1.5 MB in all): no file stays open on a client that never closes its answer."""
    return (ASSETS_DIR / name).read_bytes()
