"""A VM by its name or its id, as `openstack server show NAME` takes either."""

from __future__ import annotations

import uuid

from cli.client import ApiError, Client


def resolve_vm(client: Client, reference: str) -> str:
    """The id of the caller's VM `reference` names: an id as it is, else the one live VM of that name
    (listed with the API's exact-name filter); none or several is an ApiError that says so."""
    try:
        return str(uuid.UUID(reference))
    except ValueError:
        pass
    found = [vm["id"] for vm in client.pages("/v1/vms", name=reference)]
    if not found:
        raise ApiError(404, "not_found", f"No VM named {reference!r} in your project.", {"name": reference})
    if len(found) > 1:
        raise ApiError(
            409, "ambiguous_name", f"{len(found)} VMs are named {reference!r}; give one of their ids.",
            {"ids": ", ".join(found)},
        )  # fmt: skip
    return str(found[0])
