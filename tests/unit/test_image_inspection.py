"""Image import's pure checks: the file's own header, and the verdict on qemu-img's JSON report (the
reports below are what qemu-img 7.2 printed for images made with `qemu-img create`; the e2e tests run
the real qemu-img on such files)."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.images import ImageImportError
from worker.images.formats import parse_qcow2_header, refuse_unsafe
from worker.images.qemu_img import verdict

MIB = 1024**2


def qcow2_header(
    size: int = 16 * MIB,
    *,
    version: int = 3,
    backing: bytes = b"",
    crypt_method: int = 0,
    incompatible: int = 0,
) -> bytes:
    """A qcow2 header as qemu writes it (v2: 72 bytes, v3: 104), the backing file name after it."""
    backing_offset = 112 if backing else 0
    head = struct.pack(">4sIQIIQIIQQIIQ", b"QFI\xfb", version, backing_offset, len(backing), 16, size,
                       crypt_method, 1, 0x30000, 0x10000, 1, 0, 0)  # fmt: skip
    if version >= 3:
        head += struct.pack(">QQQII", incompatible, 0, 0, 4, 112)
    return (head.ljust(112, b"\0") + backing).ljust(512, b"\0")


def test_a_plain_header_gives_the_virtual_size_and_passes() -> None:
    for version in (2, 3):
        header = parse_qcow2_header(qcow2_header(17 * MIB, version=version))
        assert header.virtual_size == 17 * MIB
        refuse_unsafe(header)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (qcow2_header(backing=b"/var/lib/other.qcow2"), r"backing file \(/var/lib/other.qcow2\)"),
        (qcow2_header(incompatible=1 << 2), "external data file"),
        (qcow2_header(crypt_method=2), r"encrypted \(LUKS\)"),
        (qcow2_header(crypt_method=1), r"encrypted \(legacy AES\)"),
        (qcow2_header(crypt_method=7), r"encrypted \(method 7\)"),
    ],
)
def test_a_header_that_names_other_files_or_is_encrypted_is_refused(head: bytes, message: str) -> None:
    with pytest.raises(ImageImportError, match=message):
        refuse_unsafe(parse_qcow2_header(head))


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"", "not a qcow2 file: its header is no disk image format.*-f raw"),
        (b"\x7fELF" + b"\0" * 100, "not a qcow2 file.*-f raw"),
        (b"QFI\xfb\0\0\0\3", "not a qcow2 file"),  # cut short
        (b"KDMV" + b"\0" * 508, "not a qcow2 file: it is a VMDK image.*-f vmdk"),
        (b"# Disk DescriptorFile\nversion=1\n", "a VMDK descriptor.*-f vmdk"),
        (b"vhdxfile" + b"\0" * 504, "a VHDX image.*-f vhdx"),
        (b"conectix" + b"\0" * 504, "a VHD image.*-f vpc"),
        (b"LUKS\xba\xbe\0\1" + b"\0" * 504, "a LUKS-encrypted image.*-f luks"),
        (b"QED\0" + b"\0" * 508, "a QED image.*-f qed"),
        (b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(0x40, b"\0") + b"\x7f\x10\xda\xbe", "-f vdi"),
        (b"\0" * 0x8001 + b"CD001\1", "an ISO 9660 image"),
        (qcow2_header(version=1), r"old qcow \(version 1\).*-f qcow "),
        (qcow2_header(version=4), "claims version 4"),
        (qcow2_header()[:80], "cut short"),
        (qcow2_header().ljust(0x8001, b"\0") + b"CD001", "also the signature of an ISO 9660 image"),
    ],
)
def test_a_file_that_is_not_a_qcow2_by_its_header_is_refused_and_named(head: bytes, message: str) -> None:
    with pytest.raises(ImageImportError, match=message):
        parse_qcow2_header(head)


@given(st.binary(max_size=600), st.booleans())
def test_no_header_makes_the_parser_fail_other_than_by_refusing(tail: bytes, as_qcow2: bool) -> None:
    head = (b"QFI\xfb\0\0\0\3" if as_qcow2 else b"") + tail
    with contextlib.suppress(ImageImportError):
        refuse_unsafe(parse_qcow2_header(head))


QCOW2_DATA = {
    "compat": "1.1",
    "compression-type": "zlib",
    "lazy-refcounts": False,
    "refcount-bits": 16,
    "corrupt": False,
    "extended-l2": False,
}


def report(extra_data: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """A `qemu-img info --output=json -f qcow2` report of a 16 MiB image, changed by the arguments."""
    return {
        "virtual-size": 16 * MIB,
        "filename": "/proc/self/fd/3",
        "cluster-size": 65536,
        "format": "qcow2",
        "actual-size": 200704,
        "format-specific": {"type": "qcow2", "data": {**QCOW2_DATA, **(extra_data or {})}},
        "dirty-flag": False,
        **top,
    }


def test_a_plain_qcow2_report_gives_the_virtual_size() -> None:
    assert verdict(report()) == 16 * MIB


LUKS = {
    "format": "luks",
    "cipher-alg": "aes-256",
    "cipher-mode": "xts",
    "payload-offset": 2068480,
    "slots": [{"active": True, "key-offset": 4096}],
}
OVERLAY = {
    "backing-filename": "base.qcow2",
    "full-backing-filename": "/proc/self/fd/base.qcow2",
    "backing-filename-format": "qcow2",
}
RAW = {"virtual-size": 16 * MIB, "filename": "/proc/self/fd/3", "format": "raw", "actual-size": 0}


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (report(**OVERLAY), r"backing file \(base.qcow2\)"),
        (report(**{"full-backing-filename": "/srv/base.qcow2"}), "backing file"),
        (report({"data-file": "/etc/shadow", "data-file-raw": False}), "external data file"),
        (report({"data-file-raw": True}), "external data file"),
        (report({"encrypt": LUKS}, encrypted=True), r"encrypted \(LUKS\)"),
        (report({"encrypt": {"format": "aes"}}, encrypted=True), r"encrypted \(legacy AES\)"),
        (report(encrypted=True), "encrypted"),
        (RAW, "reads the file as 'raw'"),
        (report(**{"format-specific": {"type": "vmdk", "data": {}}}), "not qcow2"),
        (report(**{"virtual-size": 0}), "no usable virtual size"),
        (report(**{"virtual-size": True}), "no usable virtual size"),
        ({k: v for k, v in report().items() if k != "virtual-size"}, "no usable virtual size"),
        ({}, "reads the file as None"),
    ],
)
def test_a_report_of_anything_but_a_standalone_unencrypted_qcow2_is_refused(
    info: dict[str, Any], message: str
) -> None:
    with pytest.raises(ImageImportError, match=message):
        verdict(info)
