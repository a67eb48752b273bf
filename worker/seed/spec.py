"""What a seed is built from: everything comes from the VM's rows, resolved by the caller."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedInterface:
    name: str  # "eth0", "eth1", ... by the NIC's position
    mac: str  # "52:54:00:12:34:56"
    address: str  # "198.51.100.7/24": the address and the network's prefix length


@dataclass(frozen=True)
class SeedSpec:
    instance_id: str  # the VM's id: cloud-init runs its once-per-instance modules when this changes
    hostname: str
    interfaces: tuple[SeedInterface, ...]
    authorized_keys: tuple[str, ...]  # OpenSSH public key lines
    user_data: str | None  # what the user sent, passed on byte for byte (as UTF-8)
