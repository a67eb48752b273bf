"""Domain and volume XML: built with ElementTree, read back with ElementTree."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest

from worker.hypervisor import domain_xml as libvirt_xml
from worker.hypervisor.domain_xml import OWNER_NS, DomainSpec

VM_ID = uuid.UUID("8f1c2a4e-0000-4000-8000-000000000001")


def spec(**overrides: object) -> DomainSpec:
    values: dict[str, object] = {
        "vm_id": VM_ID,
        "name": "web-1",
        "image": "tiny",
        "vcpus": 2,
        "memory_mib": 256,
        "disk_path": "/var/lib/mini-iaas/pool/vm-x.qcow2",
        "console_log": "/var/log/mini-iaas/console/x.log",
        "domain_type": "qemu",
        **overrides,
    }
    return DomainSpec(**values)  # type: ignore[arg-type]


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)  # noqa: S314 - our own output


def test_domain_carries_the_vm_identity_and_sizes() -> None:
    root = parse(libvirt_xml.domain_xml(spec()))
    assert root.get("type") == "qemu"
    assert root.findtext("uuid") == str(VM_ID)
    assert root.findtext("name") == "iaas-web-1-8f1c2a4e"
    assert root.findtext("title") == "web-1"
    assert root.findtext("vcpu") == "2"
    memory = root.find("memory")
    assert memory is not None and (memory.text, memory.get("unit")) == ("256", "MiB")


def test_ownership_tag_in_metadata_names_the_vm() -> None:
    xml = libvirt_xml.domain_xml(spec())
    assert parse(xml).findtext(f"metadata/{{{OWNER_NS}}}vm/{{{OWNER_NS}}}id") == str(VM_ID)
    assert libvirt_xml.owner_vm_id(xml) == VM_ID
    assert libvirt_xml.owner_vm_id("<domain type='kvm'><name>foreign</name></domain>") is None


def test_disk_is_a_virtio_qcow2_on_the_volume_and_there_is_no_nic() -> None:
    devices = parse(libvirt_xml.domain_xml(spec())).find("devices")
    assert devices is not None
    disk = devices.find("disk")
    assert disk is not None
    assert disk.find("source").get("file") == "/var/lib/mini-iaas/pool/vm-x.qcow2"  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}  # type: ignore[union-attr]
    assert devices.find("interface") is None


def test_serial_console_is_logged_to_a_file() -> None:
    serial = parse(libvirt_xml.domain_xml(spec())).find("devices/serial")
    assert serial is not None
    assert serial.find("log").get("file") == "/var/log/mini-iaas/console/x.log"  # type: ignore[union-attr]


def test_text_is_escaped_by_the_xml_library_not_spliced() -> None:
    hostile = "</title><devices><interface type='network'/></devices><title>"
    root = parse(libvirt_xml.domain_xml(spec(name=hostile, image="a&b<c>")))
    assert root.findtext("title") == hostile
    assert root.find("devices/interface") is None
    assert len(root.findall("devices")) == 1


@pytest.mark.parametrize(
    ("setting", "uri", "expected"),
    [
        ("kvm", "qemu:///system", "kvm"),
        ("qemu", "qemu:///system", "qemu"),
        ("auto", "test:///default", "test"),
    ],
)
def test_domain_type_resolution(setting: str, uri: str, expected: str) -> None:
    assert libvirt_xml.resolve_domain_type(setting, uri) == expected


def test_overlay_volume_is_qcow2_backed_by_the_image() -> None:
    root = parse(libvirt_xml.overlay_volume_xml("vm-x.qcow2", 2 * 1024**3, "/pool/image-tiny.qcow2", "qcow2"))
    assert root.findtext("name") == "vm-x.qcow2"
    assert root.findtext("capacity") == str(2 * 1024**3)
    assert root.find("target/format").get("type") == "qcow2"  # type: ignore[union-attr]
    assert root.findtext("backingStore/path") == "/pool/image-tiny.qcow2"
    assert root.find("backingStore/format").get("type") == "qcow2"  # type: ignore[union-attr]


def test_nics_and_the_seed_disk() -> None:
    nics = (
        libvirt_xml.NicSpec("52:54:00:00:00:01", "iaas-net-a"),
        libvirt_xml.NicSpec("52:54:00:00:00:02", "iaas-net-b"),
    )
    xml = libvirt_xml.domain_xml(spec(seed_path="/pool/seed-x.iso", nics=nics))
    root = parse(xml)
    interfaces = root.findall("devices/interface")
    assert [(i.get("type"), i.find("mac").get("address"), i.find("source").get("network"),  # type: ignore[union-attr]
             i.find("model").get("type")) for i in interfaces] == [  # type: ignore[union-attr]
        ("network", "52:54:00:00:00:01", "iaas-net-a", "virtio"),
        ("network", "52:54:00:00:00:02", "iaas-net-b", "virtio"),
    ]  # fmt: skip
    seed = [d for d in root.findall("devices/disk") if d.find("target").get("dev") == "vdb"]  # type: ignore[union-attr]
    assert len(seed) == 1
    assert seed[0].find("source").get("file") == "/pool/seed-x.iso"  # type: ignore[union-attr]
    assert seed[0].find("driver").get("type") == "raw"  # type: ignore[union-attr]
    assert seed[0].find("readonly") is not None
    assert libvirt_xml.interface_networks(xml) == {"iaas-net-a", "iaas-net-b"}


def test_volume_owner_names_the_vm_of_its_disk_and_seed_only() -> None:
    assert libvirt_xml.volume_owner(libvirt_xml.vm_volume_name(VM_ID)) == str(VM_ID)
    assert libvirt_xml.volume_owner(libvirt_xml.seed_volume_name(VM_ID)) == str(VM_ID)
    assert libvirt_xml.volume_owner(libvirt_xml.image_volume_name("tiny")) is None
