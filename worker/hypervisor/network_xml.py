"""Isolated libvirt networks: one per (mini-iaas host, project network), built with ElementTree.

Isolated means no `<forward>` (no NAT, no routing) and no `<ip>` (the host has no address on the
bridge and runs no DHCP or DNS): guests on it reach each other and nothing else. Addresses reach the
guests through their NoCloud seed."""

from __future__ import annotations

import hashlib
import uuid
import xml.etree.ElementTree as ET

NETWORK_NAME_PREFIX = "iaas-net-"
_UUID_LENGTH = 36
BRIDGE_PREFIX = "iaas"
_IFNAME_MAX = 15  # Linux interface names (IFNAMSIZ - 1)


def network_name(host: str, network_id: uuid.UUID) -> str:
    """Readable in `virsh net-list`; carries the host because several mini-iaas hosts (test
    installations) may share one libvirtd, and each makes and removes only its own."""
    return f"{NETWORK_NAME_PREFIX}{network_id}-{host}"


def parse_network_name(name: str, host: str) -> uuid.UUID | None:
    """The project network a libvirt network of `host` stands for; None for anyone else's."""
    try:
        network_id = uuid.UUID(name[len(NETWORK_NAME_PREFIX) : len(NETWORK_NAME_PREFIX) + _UUID_LENGTH])
    except ValueError:
        return None
    # Exactly this host's: host `b` must not claim `iaas-net-<id>-a-b`.
    return network_id if name == network_name(host, network_id) else None


def bridge_name(libvirt_network: str) -> str:
    """A stable bridge name that fits IFNAMSIZ, derived from the network's (unique) name."""
    digest = hashlib.sha256(libvirt_network.encode()).hexdigest()
    return BRIDGE_PREFIX + digest[: _IFNAME_MAX - len(BRIDGE_PREFIX)]


def isolated_network_xml(name: str) -> str:
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    # stp off, delay 0: a bridge with guests only needs no loop protection and forwards at once.
    ET.SubElement(root, "bridge", name=bridge_name(name), stp="off", delay="0")
    return ET.tostring(root, encoding="unicode")
