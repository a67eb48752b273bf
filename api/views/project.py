"""/v1/project: the caller's project, its limits and what it uses of them."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from api.auth import caller
from api.presenters import project_json
from api.runtime import db
from common.models import Project

bp = Blueprint("project", __name__, url_prefix="/v1/project")


@bp.get("")
def get_project() -> ResponseReturnValue:
    who = caller()
    project = db().get(Project, who.project_id)
    assert project is not None  # a token's project is never deleted
    return jsonify(project_json(project, who))
