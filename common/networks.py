"""A project's networks: IPv4, /16 to /29, each isolated (no gateway, no route out), so every address
from the first after the network's to the one before its broadcast is a guest's to have.

What a CIDR the API takes is decided here, strictly: a network is named by its network address, so
198.51.100.7/24 is refused with the address to use instead of being silently read as .0/24. The
addresses themselves are handed out by common/ipam.py."""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid

from celery import Celery

from common.dispatch import publish_to_hosts
from common.errors import InvalidRequest
from common.queue import REMOVE_NETWORK

log = logging.getLogger(__name__)

# The largest and the smallest network: a /16 keeps the gap search of common/ipam.py cheap, and a /29
# still leaves 6 addresses (a /30's 2 would hardly be a network of VMs).
MIN_PREFIX, MAX_PREFIX = 16, 29
# Dotted quad, a slash, a prefix length: what ipaddress would also read as a netmask
# (/255.255.255.0) or a hostmask is not taken, so that there is one way to write a network.
_CIDR_RE = re.compile(r"^([0-9]{1,3}(?:\.[0-9]{1,3}){3})/([0-9]{1,2})$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
EXAMPLE = "198.51.100.0/24"


def parse_cidr(text: str) -> ipaddress.IPv4Network:
    """The IPv4 network `text` names; InvalidRequest naming the field `cidr` (and, when host bits are
    set, the network address to use) otherwise."""
    if ":" in text:
        raise _cidr_error(f"IPv6 networks are not supported; give an IPv4 network such as {EXAMPLE}.")
    match = _CIDR_RE.match(text)
    if match is None:
        raise _cidr_error(f"The cidr is not an IPv4 network in CIDR notation, such as {EXAMPLE}.")
    try:
        address = ipaddress.IPv4Address(match.group(1))  # refuses octets over 255 and leading zeros
    except ValueError:
        raise _cidr_error(f"The cidr's address is not an IPv4 address; write it as in {EXAMPLE}.") from None
    prefix = int(match.group(2))
    if not MIN_PREFIX <= prefix <= MAX_PREFIX:
        size = "large" if prefix < MIN_PREFIX else "small"
        raise _cidr_error(
            f"A /{prefix} network is too {size}: the prefix length must be {MIN_PREFIX} to {MAX_PREFIX} "
            f"(a /{MIN_PREFIX} has {usable_addresses(MIN_PREFIX)} usable addresses, "
            f"a /{MAX_PREFIX} {usable_addresses(MAX_PREFIX)}).",
            min_prefix=MIN_PREFIX,
            max_prefix=MAX_PREFIX,
        )
    network = ipaddress.IPv4Network((address, prefix), strict=False)
    if network.network_address != address:
        raise _cidr_error(
            f"{text} has host bits set: a network is named by its network address; use {network}.",
            network=str(network),
        )
    return network


def _cidr_error(message: str, **details: object) -> InvalidRequest:
    return InvalidRequest(message, fields=[{"field": "cidr", "message": message}], **details)


def size_of(prefix: int) -> int:
    return 2 ** (32 - prefix)


def usable_addresses(prefix: int) -> int:
    """Every address but the network's and the broadcast: no gateway is kept, the network is isolated."""
    return size_of(prefix) - 2


def looks_like_id(reference: str) -> bool:
    """Whether a network reference (a name or an id) is an id: a UUID as the API writes them. Names
    may not look like one (the API refuses such a name), so a reference is never both."""
    return _UUID_RE.match(reference) is not None


def as_id(reference: str) -> uuid.UUID | None:
    return uuid.UUID(reference) if looks_like_id(reference) else None


def network_deleted(celery: Celery, hosts: list[str], network_id: uuid.UUID) -> None:
    """After a network's delete is committed: ask the worker of every host to remove its libvirt
    network (`iaas.remove_network`, the id as its one argument; a host that never had it has
    nothing to do). A message the broker refuses is logged and not re-sent: the network is gone from
    the database either way, and what is left on a host is an isolated bridge no VM can be put on."""
    failed = publish_to_hosts(celery, REMOVE_NETWORK, [str(network_id)], hosts)
    if failed:
        log.warning("network %s deleted, but its removal was not queued for hosts %s", network_id, failed)
