"""Isolated libvirt networks: names, bridges and XML."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

from worker.hypervisor import network_xml

NET = uuid.UUID("5d7e0c1a-0000-4000-8000-00000000beef")


def test_the_name_carries_the_network_and_the_host_and_reads_back() -> None:
    name = network_xml.network_name("hv-a.example", NET)
    assert name == f"iaas-net-{NET}-hv-a.example"
    assert network_xml.parse_network_name(name, "hv-a.example") == NET


def test_another_hosts_or_a_foreign_network_is_not_ours() -> None:
    assert network_xml.parse_network_name(network_xml.network_name("hv-b", NET), "hv-a") is None
    assert network_xml.parse_network_name("default", "hv-a") is None
    assert network_xml.parse_network_name(network_xml.network_name("x-hv-a", NET), "hv-a") is None
    assert network_xml.parse_network_name("iaas-net-not-a-uuid-at-all-really-no-hv-a", "hv-a") is None


def test_bridge_names_fit_ifnamsiz_and_differ_per_network() -> None:
    names = {network_xml.bridge_name(network_xml.network_name("h", uuid.uuid4())) for _ in range(200)}
    assert len(names) == 200
    assert all(len(n) <= 15 and n.startswith("iaas") for n in names)


def test_the_network_is_isolated_no_forward_no_host_address() -> None:
    root = ET.fromstring(network_xml.isolated_network_xml("iaas-net-x"))  # noqa: S314 - our own output
    assert root.findtext("name") == "iaas-net-x"
    assert root.find("forward") is None  # no NAT, no routing
    assert root.find("ip") is None  # the host has no address on the bridge and serves no DHCP
    bridge = root.find("bridge")
    assert bridge is not None and bridge.get("name") == network_xml.bridge_name("iaas-net-x")
