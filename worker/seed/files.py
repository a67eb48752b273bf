"""The NoCloud files: `meta-data` and `network-config` (version 2), and `user-data` from
worker.seed.user_data."""

from __future__ import annotations

from typing import Any

from worker.seed.spec import SeedSpec
from worker.seed.user_data import user_data
from worker.seed.yaml_text import yaml_text


def meta_data(spec: SeedSpec) -> dict[str, Any]:
    return {"instance-id": spec.instance_id, "local-hostname": spec.hostname}


def network_config(spec: SeedSpec) -> dict[str, Any]:
    """Netplan-style version 2: each NIC matched by its MAC and renamed to its name, with its static
    address. No gateway and no DHCP: a network here is one L2 segment whose addresses the control
    plane hands out."""
    ethernets = {
        nic.name: {
            "match": {"macaddress": nic.mac.lower()},
            "set-name": nic.name,
            "addresses": [nic.address],
            "dhcp4": False,
            "dhcp6": False,
        }
        for nic in spec.interfaces
    }
    return {"version": 2, "ethernets": ethernets}


def seed_files(spec: SeedSpec) -> dict[str, bytes]:
    """The files of the seed, by the names cloud-init's NoCloud datasource reads."""
    return {
        "meta-data": yaml_text(meta_data(spec)).encode(),
        "user-data": user_data(spec),
        "network-config": yaml_text(network_config(spec)).encode(),
    }
