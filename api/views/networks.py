"""/v1/networks: a project's isolated IPv4 networks, by id or by name. Another project's network is not
found, exactly as if it did not exist (admins included: a network is its project's alone, as a keypair
is). The addresses on them are handed out at VM create (common/ipam.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Blueprint, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import ColumnElement, func, select, tuple_

from api.auth import caller
from api.pagination import decode_cursor, encode_cursor
from api.presenters import network_json
from api.runtime import db, runtime
from api.schemas import NetworkCreate, NetworkListQuery
from api.views.body import json_object
from common import hosts
from common.db import flush_named
from common.errors import InvalidRequest, NetworkInUse, NotFound
from common.models import Network, Nic
from common.names import is_dns_label
from common.networks import as_id, looks_like_id, network_deleted, parse_cidr

bp = Blueprint("networks", __name__, url_prefix="/v1/networks")

_NAME_UNIQUE = "networks_project_name_unique"


def _in_use() -> Any:
    """How many NICs hold an address of the network (one index range per network)."""
    return select(func.count(Nic.id)).where(Nic.network_id == Network.id).scalar_subquery()


@bp.post("")
def create_network() -> ResponseReturnValue:
    body = NetworkCreate.model_validate(json_object())
    if looks_like_id(body.name):
        message = "A network's name may not be shaped like a UUID: it would read as another network's id."
        raise InvalidRequest(message, fields=[{"field": "name", "message": message}])
    cidr = parse_cidr(body.cidr)
    session = db()
    network = Network(project_id=caller().project_id, name=body.name, cidr=str(cidr))
    session.add(network)
    flush_named(session, _NAME_UNIQUE, "network", body.name)
    session.refresh(network)
    shown = network_json(network, 0)
    session.commit()
    response = jsonify(shown)
    response.status_code = 201
    response.headers["Location"] = url_for("networks.get_network", reference=shown["id"])
    return response


@bp.get("")
def list_networks() -> ResponseReturnValue:
    """The caller's project's networks, oldest first, a page at a time (as GET /v1/vms)."""
    query = NetworkListQuery.model_validate(request.args.to_dict())
    stmt = select(Network, _in_use()).where(Network.project_id == caller().project_id)
    if query.cursor is not None:
        stmt = stmt.where(tuple_(Network.created_at, Network.id) > tuple_(*decode_cursor(query.cursor)))
    rows: Sequence[Any] = (
        db().execute(stmt.order_by(Network.created_at, Network.id).limit(query.limit + 1)).all()
    )
    page, more = rows[: query.limit], len(rows) > query.limit
    next_cursor = encode_cursor(page[-1][0].created_at, page[-1][0].id) if more else None
    return jsonify({"items": [network_json(net, in_use) for net, in_use in page], "next_cursor": next_cursor})


@bp.get("/<reference>")
def get_network(reference: str) -> ResponseReturnValue:
    network = _own_network(reference)
    in_use = db().scalar(select(func.count(Nic.id)).where(Nic.network_id == network.id)) or 0
    return jsonify(network_json(network, in_use))


@bp.delete("/<reference>")
def delete_network(reference: str) -> ResponseReturnValue:
    """409 network_in_use while a VM has a NIC on it. The row lock is the one allocators take
    (common/ipam.py), so no create can put a NIC on it between the check and the delete."""
    session = db()
    network = _own_network(reference, lock=True)
    holders = session.scalars(
        select(Nic.vm_id).where(Nic.network_id == network.id).distinct().order_by(Nic.vm_id)
    ).all()
    if holders:
        raise NetworkInUse(
            f"Network {network.name!r} has NICs of {len(holders)} VMs; delete them first.",
            network=network.name,
            vm_ids=[str(vm_id) for vm_id in holders],
        )
    network_id, known = network.id, hosts.known(session)
    session.delete(network)
    session.commit()
    network_deleted(runtime().celery, known, network_id)
    return "", 204


def _own_network(reference: str, *, lock: bool = False) -> Network:
    """The caller's project's network named or numbered `reference`; another project's is not found,
    as if it did not exist."""
    network_id = as_id(reference)
    which: ColumnElement[bool] | None = (
        Network.id == network_id
        if network_id is not None
        # nothing else can be a network's name (and a NUL never reaches PostgreSQL)
        else (Network.name == reference if is_dns_label(reference) else None)
    )
    network = None
    if which is not None:
        stmt = select(Network).where(Network.project_id == caller().project_id, which)
        network = db().scalar(stmt.with_for_update() if lock else stmt)
    if network is None:
        raise NotFound(
            f"No network {reference!r} in your project; GET /v1/networks lists them.", network=reference
        )
    return network
