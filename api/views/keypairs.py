"""/v1/keypairs: a project's SSH public keys, by name. Another project's keypair is not found, exactly
as if it did not exist (admins included: a keypair is its project's alone)."""

from __future__ import annotations

from flask import Blueprint, jsonify, url_for
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from api.auth import caller
from api.keypairs import MAX_PUBLIC_KEY_CHARS, parse_public_key
from api.presenters import keypair_json
from api.runtime import db
from api.schemas import DnsLabel
from api.views.body import json_object
from common.db import flush_named
from common.errors import NotFound
from common.models import Keypair
from common.names import is_dns_label

bp = Blueprint("keypairs", __name__, url_prefix="/v1/keypairs")

_NAME_UNIQUE = "keypairs_project_name_unique"


class KeypairCreate(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [{"name": "laptop", "public_key": "ssh-ed25519 AAAAC3Nza... me@laptop"}]
        },
    )

    name: DnsLabel
    # Its length is checked with the key (400 invalid_public_key, as for any key not taken), so the
    # limit is told, not a maxLength: that would make a longer string a schema violation instead.
    public_key: str = Field(
        description="One OpenSSH public key line: ssh-ed25519, ecdsa-sha2-nistp256/384/521, or ssh-rsa "
        f"of at least 2048 bits, with an optional comment; at most {MAX_PUBLIC_KEY_CHARS} characters.",
    )


@bp.post("")
def create_keypair() -> ResponseReturnValue:
    body = KeypairCreate.model_validate(json_object())
    key = parse_public_key(body.public_key)
    session = db()
    keypair = Keypair(
        project_id=caller().project_id, name=body.name, public_key=key.line, fingerprint=key.fingerprint
    )
    session.add(keypair)
    flush_named(session, _NAME_UNIQUE, "keypair", body.name)
    session.refresh(keypair)
    shown = keypair_json(keypair)
    session.commit()
    response = jsonify(shown)
    response.status_code = 201
    response.headers["Location"] = url_for("keypairs.get_keypair", name=body.name)
    return response


@bp.get("")
def list_keypairs() -> ResponseReturnValue:
    keypairs = db().scalars(
        select(Keypair).where(Keypair.project_id == caller().project_id).order_by(Keypair.name)
    )
    return jsonify({"items": [keypair_json(keypair) for keypair in keypairs]})


@bp.get("/<name>")
def get_keypair(name: str) -> ResponseReturnValue:
    return jsonify(keypair_json(_own_keypair(name)))


@bp.delete("/<name>")
def delete_keypair(name: str) -> ResponseReturnValue:
    db().delete(_own_keypair(name))
    db().commit()
    return "", 204


def _own_keypair(name: str) -> Keypair:
    """The caller's project's keypair `name`; another project's is not found, as if it did not exist."""
    keypair = (
        db().scalar(select(Keypair).where(Keypair.project_id == caller().project_id, Keypair.name == name))
        if is_dns_label(name)  # nothing else can be a keypair's name (and a NUL never reaches PostgreSQL)
        else None
    )
    if keypair is None:
        raise NotFound(
            f"No keypair named {name!r} in your project; GET /v1/keypairs lists them.", keypair=name
        )
    return keypair
