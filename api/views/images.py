"""/v1/images: the base images VMs can be built from (registered with `iaas-admin image import`)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from api.presenters import image_json
from api.runtime import db
from common.errors import NotFound
from common.models import Image
from common.names import is_dns_label

bp = Blueprint("images", __name__, url_prefix="/v1/images")


@bp.get("")
def list_images() -> ResponseReturnValue:
    images = db().scalars(select(Image).order_by(Image.name)).all()
    return jsonify({"items": [image_json(image) for image in images]})


@bp.get("/<name>")
def get_image(name: str) -> ResponseReturnValue:
    image = db().scalar(select(Image).where(Image.name == name)) if is_dns_label(name) else None
    if image is None:
        raise NotFound(f"No image named {name!r}; GET /v1/images lists them.", image=name)
    return jsonify(image_json(image))
