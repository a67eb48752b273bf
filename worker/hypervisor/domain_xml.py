"""Domain, volume and pool XML, built with ElementTree: user input never meets string formatting."""

from __future__ import annotations

import os
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

# The ownership tag: a domain carrying it in <metadata> was made by mini-iaas (reconciliation reads it).
OWNER_NS = "https://mini-iaas.dev/xmlns/vm/1"
OWNER_PREFIX = "iaas"
ET.register_namespace(OWNER_PREFIX, OWNER_NS)

VM_VOLUME_PREFIX = "vm-"
SEED_VOLUME_PREFIX = "seed-"
# A VM's volumes: its disk and its NoCloud seed, each named after the VM id (so an orphan names its VM).
VM_VOLUME_KINDS = ((VM_VOLUME_PREFIX, ".qcow2"), (SEED_VOLUME_PREFIX, ".iso"))
DOMAIN_NAME_PREFIX = "iaas-"


@dataclass(frozen=True)
class NicSpec:
    mac: str
    network: str  # the libvirt network's name (worker/hypervisor/network_xml.py)


@dataclass(frozen=True)
class DomainSpec:
    vm_id: uuid.UUID
    name: str
    image: str
    vcpus: int
    memory_mib: int
    disk_path: str
    console_log: str
    domain_type: str
    host: str = ""  # the mini-iaas host that owns it: several installations may share one libvirtd
    seed_path: str | None = None  # the NoCloud seed ISO, attached read-only as the second disk
    nics: tuple[NicSpec, ...] = ()


def domain_name(vm_name: str, vm_id: uuid.UUID) -> str:
    """Readable in `virsh list`, and unique even when a VM name is reused after a delete."""
    return f"{DOMAIN_NAME_PREFIX}{vm_name}-{vm_id.hex[:8]}"


def vm_volume_name(vm_id: uuid.UUID) -> str:
    return f"{VM_VOLUME_PREFIX}{vm_id}.qcow2"


def seed_volume_name(vm_id: uuid.UUID) -> str:
    return f"{SEED_VOLUME_PREFIX}{vm_id}.iso"


def volume_owner(volume: str) -> str | None:
    """The VM id a VM volume (disk or seed) is named after; None for any other volume (images)."""
    for prefix, suffix in VM_VOLUME_KINDS:
        if volume.startswith(prefix) and volume.endswith(suffix):
            return volume[len(prefix) : -len(suffix)]
    return None


def image_volume_name(image_name: str) -> str:
    return f"image-{image_name}.qcow2"


def resolve_domain_type(setting: str, libvirt_uri: str) -> str:
    """`auto`: the test driver knows only `test`; elsewhere kvm when /dev/kvm is usable, else qemu (TCG)."""
    if setting != "auto":
        return setting
    if libvirt_uri.startswith("test:"):
        return "test"
    return "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "qemu"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def _to_string(root: ET.Element) -> str:
    return ET.tostring(root, encoding="unicode")


def domain_xml(spec: DomainSpec) -> str:
    root = ET.Element("domain", type=spec.domain_type)
    _sub(root, "name", domain_name(spec.name, spec.vm_id))
    _sub(root, "uuid", str(spec.vm_id))
    _sub(root, "title", spec.name)
    _sub(root, "description", f"mini-iaas VM {spec.name} (image {spec.image})")
    owner = ET.SubElement(_sub(root, "metadata"), f"{{{OWNER_NS}}}vm")
    _sub(owner, f"{{{OWNER_NS}}}id", str(spec.vm_id))
    _sub(owner, f"{{{OWNER_NS}}}name", spec.name)
    _sub(owner, f"{{{OWNER_NS}}}image", spec.image)
    _sub(owner, f"{{{OWNER_NS}}}host", spec.host)
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus))
    os_element = _sub(root, "os")
    _sub(os_element, "type", "hvm")
    _sub(os_element, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")  # so a graceful shutdown (ACPI power button) reaches the guest
    _sub(features, "apic")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=spec.disk_path)
    _sub(disk, "target", dev="vda", bus="virtio")
    if spec.seed_path is not None:
        # A virtio disk, not a CD-ROM: cloud-init finds the seed by its label `cidata` on any block
        # device, and the guest needs no ATA/SCSI CD-ROM drivers.
        seed = _sub(devices, "disk", type="file", device="disk")
        _sub(seed, "driver", name="qemu", type="raw")
        _sub(seed, "source", file=spec.seed_path)
        _sub(seed, "target", dev="vdb", bus="virtio")
        _sub(seed, "readonly")
    for nic in spec.nics:
        interface = _sub(devices, "interface", type="network")
        _sub(interface, "mac", address=nic.mac)
        _sub(interface, "source", network=nic.network)
        _sub(interface, "model", type="virtio")
    # A pty serial console (for `virsh console`) whose output virtlogd also writes to a file.
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=spec.console_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    return _to_string(root)


def owner_vm_id(domain_xml_text: str, host: str | None = None) -> uuid.UUID | None:
    """The VM id in our ownership tag, or None for a domain mini-iaas did not make -- or, when `host`
    is given, that another mini-iaas host made (it is theirs to manage, never ours to touch)."""
    root = ET.fromstring(domain_xml_text)  # noqa: S314 - XML from our own libvirtd, not from users
    tag = root.find(f"metadata/{{{OWNER_NS}}}vm")
    if tag is None or not tag.findtext(f"{{{OWNER_NS}}}id"):
        return None
    if host is not None and tag.findtext(f"{{{OWNER_NS}}}host") != host:
        return None
    try:
        return uuid.UUID(tag.findtext(f"{{{OWNER_NS}}}id") or "")
    except ValueError:
        return None


def interface_networks(domain_xml_text: str) -> set[str]:
    """The networks a domain's interfaces are on."""
    root = ET.fromstring(domain_xml_text)  # noqa: S314 - XML from our own libvirtd, not from users
    return {
        source.get("network", "")
        for source in root.iterfind("devices/interface[@type='network']/source")
        if source.get("network")
    }


def overlay_volume_xml(name: str, capacity_bytes: int, backing_path: str, backing_format: str) -> str:
    root = ET.Element("volume")
    _sub(root, "name", name)
    _sub(root, "capacity", str(capacity_bytes), unit="bytes")
    target = _sub(root, "target")
    _sub(target, "format", type="qcow2")
    backing = _sub(root, "backingStore")
    _sub(backing, "path", backing_path)
    _sub(backing, "format", type=backing_format)
    return _to_string(root)


def plain_volume_xml(name: str, capacity_bytes: int, volume_format: str) -> str:
    """A volume with no backing file: an image being imported (qcow2) or a seed (raw)."""
    root = ET.Element("volume")
    _sub(root, "name", name)
    _sub(root, "capacity", str(capacity_bytes), unit="bytes")
    target = _sub(root, "target")
    _sub(target, "format", type=volume_format)
    return _to_string(root)


def dir_pool_xml(name: str, path: str) -> str:
    root = ET.Element("pool", type="dir")
    _sub(root, "name", name)
    target = _sub(root, "target")
    _sub(target, "path", path)
    return _to_string(root)
