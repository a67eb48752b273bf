"""What a file's own header says it is, read before qemu-img ever opens it.

A qcow2 header can name other files that qemu opens with the image: a backing file and an external
data file. Those are refused here, from the bytes, before qemu-img runs, so that qemu-img is never
handed a file that points it at other files; qemu_img.py then checks the same things in its report.
The file also has to be a qcow2 by its magic, not merely called one: a raw, VMDK or other file
labelled qcow2 is refused, and its real format named so it can be converted."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from worker.images.errors import ImageImportError

HEAD_BYTES = 0x8006  # enough for every signature below (the ISO 9660 one ends at 0x8006)
QCOW2_MAGIC = b"QFI\xfb"
# magic, version, backing_file_offset, backing_file_size, cluster_bits, size, crypt_method, l1_size,
# l1_table_offset, refcount_table_offset, refcount_table_clusters, nb_snapshots, snapshots_offset
_V2 = struct.Struct(">4sIQIIQIIQQIIQ")
_V3 = struct.Struct(">QQQII")  # incompatible, compatible, autoclear features, refcount_order, header_length
INCOMPAT_DATA_FILE = 1 << 2
_CRYPT_METHODS = {1: "legacy AES", 2: "LUKS"}

# (offset, signature, what it is, its qemu-img format name)
_SIGNATURES = (
    (0, b"KDMV", "a VMDK image", "vmdk"),
    (0, b"# Disk DescriptorFile", "a VMDK descriptor", "vmdk"),
    (0, b"vhdxfile", "a VHDX image", "vhdx"),
    (0, b"conectix", "a VHD image", "vpc"),
    (0, b"LUKS\xba\xbe", "a LUKS-encrypted image", "luks"),
    (0, b"QED\x00", "a QED image", "qed"),
    (0x40, b"\x7f\x10\xda\xbe", "a VDI image", "vdi"),
    (0x8001, b"CD001", "an ISO 9660 image", "raw"),
)


@dataclass(frozen=True)
class Qcow2Header:
    version: int
    virtual_size: int
    backing_file: str | None  # None: no backing file
    encryption: str | None  # None: not encrypted
    has_data_file: bool


def identify(head: bytes) -> str:
    """What a non-qcow2 file appears to be, as the start of a sentence, with how to convert it."""
    for offset, signature, what, fmt in _SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return f"it is {what}; convert it first: qemu-img convert -f {fmt} -O qcow2 IN OUT.qcow2"
    return (
        "its header is no disk image format known here (a raw disk?); if it is a raw disk, convert it "
        "first: qemu-img convert -f raw -O qcow2 IN OUT.qcow2"
    )


def parse_qcow2_header(head: bytes) -> Qcow2Header:
    """The qcow2 header at the start of `head` (the file's first bytes), or ImageImportError."""
    if head[:4] != QCOW2_MAGIC or len(head) < _V2.size:
        raise ImageImportError(f"not a qcow2 file: {identify(head)}")
    also = [what for offset, sig, what, _fmt in _SIGNATURES if offset and head[offset:].startswith(sig)]
    if also:
        # A file that two formats can claim is read one way here and maybe another way elsewhere.
        raise ImageImportError(
            f"the file has a qcow2 header but also the signature of {also[0]}; a file that reads as two "
            "formats is not imported: make a clean copy first: "
            "qemu-img convert -f qcow2 -O qcow2 IN OUT.qcow2"
        )
    (_magic, version, backing_offset, backing_size, _cluster_bits, size, crypt_method, *_rest) = (
        _V2.unpack_from(head)
    )
    if version == 1:
        raise ImageImportError(
            "not a qcow2 file: it is an old qcow (version 1) image; convert it first: "
            "qemu-img convert -f qcow -O qcow2 IN OUT.qcow2"
        )
    if version not in (2, 3):
        raise ImageImportError(
            f"the qcow2 header claims version {version}, which qemu does not write (2 and 3 exist); "
            "the file is damaged or not a qcow2 image: do not import it"
        )
    incompatible = 0
    if version == 3:
        if len(head) < _V2.size + _V3.size:
            raise ImageImportError("the qcow2 header is cut short; the file is damaged: do not import it")
        incompatible = _V3.unpack_from(head, _V2.size)[0]
    backing = None
    if backing_offset:
        name = head[backing_offset : backing_offset + min(backing_size, 1023)]
        backing = name.decode("utf-8", "replace") or "?"
    return Qcow2Header(
        version=version,
        virtual_size=size,
        backing_file=backing,
        encryption=_CRYPT_METHODS.get(crypt_method, f"method {crypt_method}") if crypt_method else None,
        has_data_file=bool(incompatible & INCOMPAT_DATA_FILE),
    )


def refuse_unsafe(header: Qcow2Header) -> None:
    """Refuse what makes an image depend on something outside its own file, or unreadable by VMs."""
    if header.backing_file is not None:
        refuse_backing_file(header.backing_file)
    if header.has_data_file:
        refuse_data_file()
    if header.encryption is not None:
        refuse_encryption(header.encryption)


# The refusals are shared with qemu_img.py, so both checks say the same thing.


def refuse_backing_file(name: str) -> None:
    # A base image must stand alone: a backing file would make VMs read a file outside the pool.
    raise ImageImportError(
        f"the qcow2 file has a backing file ({name}); an image must stand alone: flatten it first: "
        "qemu-img convert -O qcow2 IN OUT.qcow2"
    )


def refuse_data_file() -> None:
    raise ImageImportError(
        "the qcow2 file keeps its data in an external data file, which VMs would read from outside the "
        "pool (and which could name any file on this host); make a self-contained copy first: "
        "qemu-img convert -O qcow2 IN OUT.qcow2"
    )


def refuse_encryption(method: str) -> None:
    raise ImageImportError(
        f"the qcow2 file is encrypted ({method}); VMs get no key to read it: import an unencrypted "
        "copy (qemu-img convert with the key's --object secret and -O qcow2)"
    )
