"""The seed image read back: an ISO 9660 volume labelled `cidata` whose Rock Ridge and Joliet names
are the NoCloud file names, holding exactly seed_files(). blkid, where the machine has it, is asked
as cloud-init asks it; pycdlib alone decides the rest."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pycdlib
import pytest

from worker.seed import SEED_LABEL, SeedInterface, SeedSpec, build_seed_iso, seed_files

SPEC = SeedSpec(
    instance_id="vm-7f3a",
    hostname="db-1",
    interfaces=(SeedInterface("eth0", "52:54:00:00:00:07", "198.51.100.7/24"),),
    authorized_keys=("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKxMZgE3pzJ3pdT6jv1p5x6e+H4/Hw3z5ZvvX2aM+xyz k",),
    user_data="#!/bin/sh\r\necho ünïcode",
)


@pytest.fixture
def image() -> pycdlib.PyCdlib:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(build_seed_iso(SPEC)))
    return iso


def read(iso: pycdlib.PyCdlib, **path: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **path)
    return out.getvalue()


def test_the_volume_is_labelled_cidata(image: pycdlib.PyCdlib) -> None:
    assert image.pvd.volume_identifier.decode().rstrip() == SEED_LABEL == "cidata"
    assert image.joliet_vd.volume_identifier.decode("utf-16-be").rstrip() == SEED_LABEL


def test_rock_ridge_names_hold_the_seed_files(image: pycdlib.PyCdlib) -> None:
    names = {
        child.rock_ridge.name().decode()
        for child in image.list_children(rr_path="/")
        if not (child.is_dot() or child.is_dotdot())
    }
    assert names == {"meta-data", "user-data", "network-config"}
    for name, content in seed_files(SPEC).items():
        assert read(image, rr_path=f"/{name}") == content


def test_joliet_names_hold_the_seed_files_too(image: pycdlib.PyCdlib) -> None:
    for name, content in seed_files(SPEC).items():
        assert read(image, joliet_path=f"/{name}") == content


def run_on_image(tmp_path: Path, *command: str) -> list[str]:
    """The words `command IMAGE` prints about the seed image."""
    path = tmp_path / "seed.iso"
    path.write_bytes(build_seed_iso(SPEC))
    done = subprocess.run([*command, str(path)], capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.split()


# util-linux's blkid is on every Debian system (it is what cloud-init itself asks); Linux's own iso9660
# driver reading the names is checked by the tiny guest (tests/e2e/test_tiny_seed.py).
def test_blkid_sees_an_iso9660_labelled_cidata(tmp_path: Path) -> None:
    found = run_on_image(tmp_path, "blkid", "-p", "-o", "export")
    assert "TYPE=iso9660" in found
    assert f"LABEL={SEED_LABEL}" in found
