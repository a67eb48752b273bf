"""Importing a local qcow2 file as an image: opened once (source.py), inspected by its own header
(formats.py) and by qemu-img under resource limits (qemu_img.py), then uploaded into the storage pool
through libvirt and recorded (importer.py). Deleting one, when no VM uses it: deleter.py."""

from __future__ import annotations

from worker.images.deleter import delete_image
from worker.images.errors import ImageDeleteError, ImageImportError
from worker.images.importer import image_exists, import_image
from worker.images.source import ImageFile, open_image_file

__all__ = [
    "ImageDeleteError",
    "ImageFile",
    "ImageImportError",
    "delete_image",
    "image_exists",
    "import_image",
    "open_image_file",
]
