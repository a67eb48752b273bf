"""Helpers for tests that run their own worker against qemu:///system, in a pool of their own."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from common.config import Settings
from common.db import transaction
from common.models import Image
from worker.hypervisor.connection import Hypervisor
from worker.images import import_image, open_image_file

URI = "qemu:///system"


def virsh(*args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, check=check, timeout=60
    )
    return done.stdout


def import_blank_image(settings: Settings, sessions: Any, name: str, directory: Path) -> str:
    """A small empty qcow2, imported for real (guests need not boot to be created and destroyed)."""
    source = directory / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(source), "16M"], check=True)
    with transaction(sessions) as session:
        session.execute(delete(Image).where(Image.name == name))
    hv = Hypervisor(settings.libvirt_uri)
    try:
        with open_image_file(str(source)) as image_file:
            import_image(hv, sessions, settings, name, image_file)
    finally:
        hv.close()
    return name
