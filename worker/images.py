"""Importing a local qcow2 file as an image: uploaded into the storage pool through libvirt."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.config import Settings
from common.db import transaction
from common.models import Image
from common.names import is_dns_label
from worker.hypervisor import domain_xml
from worker.hypervisor.connection import Hypervisor

QCOW2_MAGIC = b"QFI\xfb"
_HEADER = struct.Struct(
    ">4sIQIIQ"
)  # magic, version, backing_file_offset, backing_file_size, cluster_bits, size


class ImageImportError(Exception):
    """Why an image cannot be imported, phrased so the operator knows what to fix."""


@dataclass(frozen=True)
class Qcow2Header:
    virtual_size: int
    has_backing_file: bool


def read_qcow2_header(f: BinaryIO) -> Qcow2Header:
    raw = f.read(_HEADER.size)
    if len(raw) < _HEADER.size or raw[:4] != QCOW2_MAGIC:
        raise ImageImportError("not a qcow2 file; convert it first: qemu-img convert -O qcow2 IN OUT.qcow2")
    _magic, _version, backing_offset, _backing_size, _cluster_bits, size = _HEADER.unpack(raw)
    return Qcow2Header(virtual_size=size, has_backing_file=backing_offset != 0)


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def image_exists(sessions: sessionmaker[Session], name: str) -> bool:
    with sessions() as session:
        return session.scalar(select(Image.id).where(Image.name == name)) is not None


def import_image(
    hv: Hypervisor,
    sessions: sessionmaker[Session],
    settings: Settings,
    name: str,
    path: str,
    progress: Callable[[int], None] = lambda _n: None,
) -> tuple[Image, bool]:
    """Register `path` as image `name`. Returns (image, created); importing the same file twice is a no-op."""
    if not is_dns_label(name):
        raise ImageImportError(f"image name {name!r} must be a lowercase DNS label (a-z, 0-9, '-', <= 63)")
    with open(path, "rb") as f:
        header = read_qcow2_header(f)
    if header.has_backing_file:
        # A base image must stand alone: a backing file would make VMs read a file outside the pool.
        raise ImageImportError(
            "the qcow2 file has a backing file; flatten it: qemu-img convert -O qcow2 IN OUT"
        )
    checksum = sha256_of(path)
    with sessions() as session:
        existing = session.scalar(select(Image).where(Image.name == name))
    if existing is not None:
        if existing.checksum_sha256 == checksum:
            return existing, False
        raise ImageImportError(f"an image named {name!r} exists with other contents; pick another name")

    pool = hv.pool(settings)
    volume_name = domain_xml.image_volume_name(name)
    hv.delete_volume(pool, volume_name)  # a leftover of an import that died before its row was written
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as source:
            info = hv.upload_volume(pool, volume_name, source, size, progress)
        image = Image(
            name=name,
            host=settings.host,
            pool=settings.storage_pool,
            volume=volume_name,
            path=info.path,
            format="qcow2",
            size_bytes=size,
            virtual_size_bytes=header.virtual_size,
            checksum_sha256=checksum,
        )
        with transaction(sessions) as session:
            session.add(image)
    except BaseException:
        hv.delete_volume(pool, volume_name)  # no half-imported image: the volume goes with the failure
        raise
    return image, True
