"""Addresses, kept in PostgreSQL: a VM's NICs are written in its create's transaction, after its row
(and its quota), and deleted when it stops holding quota (common/lifecycle.py, in the same statement
that gives the quota back). So an address is taken exactly while the VM's resources are, and a create
that is refused for any reason, a full network included, leaves nothing behind.

Allocators of one network are serialised by a lock on its row (SELECT ... FOR UPDATE; all the
networks of a request are locked in one statement, in id order, so two requests never wait on each
other in a cycle). Under that lock the lowest free address is found by a gap search in SQL, which
walks the network's addresses in index order and stops at the first hole: nothing is read into
Python. `(network_id, ip)` being unique is the backstop should that ever be wrong.

These functions add and flush; the request that called them owns the commit."""

from __future__ import annotations

import ipaddress
import secrets
import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, or_, select, text
from sqlalchemy.orm import Session

from common.errors import Conflict, InvalidIp, InvalidRequest, IpInUse, NetworkFull, UnknownNetwork
from common.models import Network, Nic
from common.networks import as_id

MAX_NICS = 8
# QEMU's own prefix (locally administered by convention, what libvirt picks too) and 3 random bytes.
MAC_PREFIX = "52:54:00"
# A clash of 24 random bits within one host's few thousand MACs is rare; five in a row is a bug.
_MAC_ATTEMPTS = 5


@dataclass(frozen=True)
class NicRequest:
    network: str  # its name or its id
    ip: str | None = None  # None: the lowest free address


@dataclass(frozen=True)
class Address:
    """A NIC as the API shows it (`position` orders a VM's NICs: eth0, eth1, ...)."""

    position: int
    network: str
    network_id: uuid.UUID
    mac: str
    ip: str

    def as_json(self) -> dict[str, Any]:
        return {"network": self.network, "network_id": str(self.network_id), "mac": self.mac, "ip": self.ip}


_UUID = Nic.__table__.c.id.type

# The lowest free host address of the (locked) network, and the NIC on it, in one statement. The
# first host address when it is free; else the address after the first used one whose successor is
# not used (a hole, or the end of the used run). `ON CONFLICT DO NOTHING` (no target): a MAC that is
# taken inserts nothing instead of aborting the transaction, and the caller tries another.
_INSERT_LOWEST_FREE = text(
    """
    WITH net AS (
        SELECT set_masklen(network(cidr)::inet + 1, 32) AS first_host,
               set_masklen(broadcast(cidr), 32) AS broadcast
        FROM networks WHERE id = :network_id
    ), free AS (
        SELECT net.broadcast, CASE
            WHEN NOT EXISTS (SELECT 1 FROM nics WHERE network_id = :network_id AND ip = net.first_host)
            THEN net.first_host
            ELSE (
                SELECT used.ip + 1 FROM (
                    SELECT ip, lead(ip) OVER (ORDER BY ip) AS next_ip FROM nics WHERE network_id = :network_id
                ) used
                WHERE used.next_ip IS NULL OR used.next_ip <> used.ip + 1
                ORDER BY used.ip LIMIT 1
            )
        END AS ip
        FROM net
    )
    INSERT INTO nics (id, vm_id, network_id, position, mac, ip)
    SELECT :nic_id, :vm_id, :network_id, :position, CAST(:mac AS macaddr), free.ip
    FROM free WHERE free.ip < free.broadcast
    ON CONFLICT DO NOTHING
    RETURNING host(ip)
    """
).bindparams(*(bindparam(name, type_=_UUID) for name in ("network_id", "nic_id", "vm_id")))

_INSERT_CHOSEN = text(
    """
    INSERT INTO nics (id, vm_id, network_id, position, mac, ip)
    VALUES (:nic_id, :vm_id, :network_id, :position, CAST(:mac AS macaddr), CAST(:ip AS inet))
    ON CONFLICT DO NOTHING
    RETURNING host(ip)
    """
).bindparams(*(bindparam(name, type_=_UUID) for name in ("network_id", "nic_id", "vm_id")))


@dataclass(frozen=True)
class _Locked:
    id: uuid.UUID
    name: str
    cidr: ipaddress.IPv4Network


def allocate(
    session: Session, vm_id: uuid.UUID, project_id: uuid.UUID, wanted: Sequence[NicRequest]
) -> list[Address]:
    """Give the VM a NIC on each network of `wanted`, in order (position 0, 1, ...): the address asked
    for, or the lowest free one. Raises (and the caller's transaction must then be rolled back) for
    a network the project does not have (400 unknown_network), one named twice (400), an address
    outside its network or not a host address (400 invalid_ip), one that is taken (409 ip_in_use),
    or a network with no address left (409 network_full)."""
    networks = _lock(session, project_id, [nic.network for nic in wanted])
    addresses: list[Address] = []
    for position, nic in enumerate(wanted):
        network = networks.get(nic.network)
        if network is None:
            raise UnknownNetwork(
                f"No network {nic.network!r} in your project; GET /v1/networks lists them.",
                network=nic.network,
            )
        if any(address.network_id == network.id for address in addresses):
            raise InvalidRequest(
                f"Network {network.name!r} is named twice; a VM has at most one NIC on a network.",
                fields=[{"field": f"networks.{position}", "message": "The same network twice."}],
            )
        addresses.append(_allocate_one(session, vm_id, position, network, nic.ip))
    return addresses


def _lock(session: Session, project_id: uuid.UUID, references: Collection[str]) -> dict[str, _Locked]:
    """Lock the project's networks that `references` name (by id or by name), in id order; each
    under every reference that names it."""
    ids = [found for found in map(as_id, references) if found is not None]
    rows = session.execute(
        select(Network.id, Network.name, Network.cidr)
        .where(Network.project_id == project_id, or_(Network.name.in_(references), Network.id.in_(ids)))
        .order_by(Network.id)
        .with_for_update()
    ).all()
    locked = [_Locked(row.id, row.name, ipaddress.IPv4Network(row.cidr)) for row in rows]
    return {ref: net for net in locked for ref in (net.name, str(net.id)) if ref in references}


def _allocate_one(
    session: Session, vm_id: uuid.UUID, position: int, network: _Locked, ip: str | None
) -> Address:
    if ip is not None:
        _check_host_address(network, ip)
    params: dict[str, Any] = {"vm_id": vm_id, "network_id": network.id, "position": position}
    for _attempt in range(_MAC_ATTEMPTS):
        mac = random_mac()
        if ip is None:
            taken = session.execute(_INSERT_LOWEST_FREE, {**params, "nic_id": uuid.uuid4(), "mac": mac})
        else:
            taken = session.execute(_INSERT_CHOSEN, {**params, "nic_id": uuid.uuid4(), "mac": mac, "ip": ip})
        got = taken.scalar()
        if got is not None:
            return Address(position, network.name, network.id, mac, got)
        # Nothing inserted: the network is full, the address asked for is taken, or the MAC was.
        if ip is None and _used(session, network.id) >= network.cidr.num_addresses - 2:
            raise NetworkFull(
                f"Network {network.name!r} ({network.cidr}) has no free address; delete VMs on it, or "
                "put the VM on another network.",
                network=network.name,
                cidr=str(network.cidr),
            )
        if ip is not None and _holder(session, network.id, ip):
            raise IpInUse(
                f"{ip} is taken on network {network.name!r}; leave `ip` out for the lowest free address.",
                network=network.name,
                ip=ip,
            )
    raise Conflict("Could not pick a MAC address no other NIC has; retry the request.")


def _check_host_address(network: _Locked, ip: str) -> None:
    address = ipaddress.IPv4Address(ip)  # the request's schema took only dotted quads
    first, last = network.cidr.network_address + 1, network.cidr.broadcast_address - 1
    if not first <= address <= last:
        raise InvalidIp(
            f"{ip} is not a host address of network {network.name!r} ({network.cidr}): use one from "
            f"{first} to {last}.",
            network=network.name,
            cidr=str(network.cidr),
            ip=ip,
            first=str(first),
            last=str(last),
        )


def _used(session: Session, network_id: uuid.UUID) -> int:
    return session.scalar(select(func.count(Nic.id)).where(Nic.network_id == network_id)) or 0


def _holder(session: Session, network_id: uuid.UUID, ip: str) -> bool:
    found = session.scalar(select(Nic.id).where(Nic.network_id == network_id, Nic.ip == ip))
    return found is not None


def random_mac() -> str:
    return f"{MAC_PREFIX}:" + ":".join(f"{byte:02x}" for byte in secrets.token_bytes(3))


def addresses_of(session: Session, vm_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, list[Address]]:
    """The NICs of these VMs, each VM's by position, in one query (a page of VMs costs one more)."""
    found: dict[uuid.UUID, list[Address]] = defaultdict(list)
    if not vm_ids:
        return found
    rows: Sequence[Any] = session.execute(
        select(Nic.vm_id, Nic.position, Network.name, Nic.network_id, Nic.mac, func.host(Nic.ip))
        .join(Network, Network.id == Nic.network_id)
        .where(Nic.vm_id.in_(list(vm_ids)))
        .order_by(Nic.vm_id, Nic.position)
    ).all()
    for vm_id, position, name, network_id, mac, ip in rows:
        found[vm_id].append(Address(position, name, network_id, str(mac), ip))
    return found
