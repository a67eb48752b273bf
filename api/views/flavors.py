"""/v1/flavors: named VM sizes, shared by every project (made with `iaas-admin flavor create`)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from api.presenters import flavor_json
from api.runtime import db
from common.flavors import all_flavors

bp = Blueprint("flavors", __name__, url_prefix="/v1/flavors")


@bp.get("")
def list_flavors() -> ResponseReturnValue:
    return jsonify({"items": [flavor_json(flavor) for flavor in all_flavors(db())]})
