"""/v1/project: the caller's project, its limits and what it uses of them."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from api.auth import caller
from api.runtime import db
from common import projects
from common.models import Project

bp = Blueprint("project", __name__, url_prefix="/v1/project")


@bp.get("")
def get_project() -> ResponseReturnValue:
    who = caller()
    project = db().get(Project, who.project_id)
    assert project is not None  # a token's project is never deleted
    return jsonify(
        {
            "id": str(project.id),
            "name": project.name,
            "limits": projects.limits_of(project).as_dict(),
            "usage": projects.usage(db(), project.id).as_dict(),
            "token": {"id": str(who.token_id), "name": who.token_name, "role": str(who.role)},
        }
    )
