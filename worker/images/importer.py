"""Importing an open qcow2 file as an image: inspected, then uploaded into the storage pool through
libvirt and recorded. A refusal leaves nothing behind: the checks all run before the volume exists,
and a failure after that deletes the volume again."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.config import Settings
from common.db import transaction
from common.models import Image
from common.names import is_dns_label
from worker.hypervisor import domain_xml
from worker.hypervisor.connection import Hypervisor
from worker.images.deleter import delete_image
from worker.images.errors import ImageImportError
from worker.images.formats import HEAD_BYTES, parse_qcow2_header, refuse_unsafe
from worker.images.qemu_img import DEFAULT_LIMITS, FORMAT, Limits, qemu_img_info, verdict
from worker.images.source import ImageFile

log = logging.getLogger(__name__)


def inspect(source: ImageFile, limits: Limits = DEFAULT_LIMITS) -> int:
    """The virtual size of `source` if it is a self-contained, unencrypted qcow2; else ImageImportError.
    Its own header is checked first, so qemu-img never opens a file that names other files."""
    header = parse_qcow2_header(source.read_at(0, HEAD_BYTES))
    refuse_unsafe(header)
    virtual_size = verdict(qemu_img_info(source, limits))
    if virtual_size != header.virtual_size:
        raise ImageImportError(
            f"the qcow2 header says {header.virtual_size} bytes but qemu-img reads {virtual_size}; "
            "the file is not what it claims: do not import it"
        )
    return virtual_size


def image_exists(sessions: sessionmaker[Session], name: str) -> bool:
    with sessions() as session:
        return session.scalar(select(Image.id).where(Image.name == name)) is not None


def import_image(
    hv: Hypervisor,
    sessions: sessionmaker[Session],
    settings: Settings,
    name: str,
    source: ImageFile,
    progress: Callable[[int], None] = lambda _n: None,
    *,
    replace: bool = False,
) -> tuple[Image, bool]:
    """Register `source` as image `name`. Returns (image, created); importing the same file twice is
    a no-op. With `replace`, an image `name` with other contents is deleted first -- refused, like
    `image delete`, while a VM that is not deleted uses it."""
    if not is_dns_label(name):
        raise ImageImportError(f"image name {name!r} must be a lowercase DNS label (a-z, 0-9, '-', <= 63)")
    virtual_size = inspect(source)
    checksum = source.sha256()
    with sessions() as session:
        existing = session.scalar(select(Image).where(Image.name == name))
    if existing is not None:
        if existing.checksum_sha256 == checksum:
            return existing, False
        if not replace:
            raise ImageImportError(
                f"an image named {name!r} exists with other contents; pick another name, or --replace it"
            )
        log.info("replacing image %s (sha256 %s) with %s", name, existing.checksum_sha256[:12], checksum[:12])
        delete_image(hv, sessions, settings, name)

    pool = hv.pool(settings)
    volume_name = domain_xml.image_volume_name(name)
    hv.delete_volume(pool, volume_name)  # a leftover of an import that died before its row was written
    try:
        reader = source.reader(progress)
        info = hv.upload_volume(pool, volume_name, reader, source.size)
        reader.check_sent(checksum)
        source.check_unchanged()
        image = Image(
            name=name,
            host=settings.host,
            pool=settings.storage_pool,
            volume=volume_name,
            path=info.path,
            format=FORMAT,
            size_bytes=source.size,
            virtual_size_bytes=virtual_size,
            checksum_sha256=checksum,
        )
        with transaction(sessions) as session:
            session.add(image)
    except BaseException:
        # No half-imported image: the volume goes with the failure. A failing delete is logged and
        # never raised over the error that made it necessary.
        try:
            hv.delete_volume(pool, volume_name)
        except Exception:
            log.exception("could not delete volume %s after a failed import; delete it by hand", volume_name)
        raise
    return image, True
