"""`iaas-admin image import` for real: a qcow2 uploaded through libvirt into a pool on qemu:///system,
checked with virsh and sha256 -- in a throw-away pool and the test database, not the running stack's."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.environment import ROOT

URI = "qemu:///system"
ADMIN = [sys.executable, "-m", "worker.cli"]


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, check=check, timeout=60
    )


@pytest.fixture
def pool(tmp_path: Path, database: str) -> Iterator[dict[str, str]]:
    name = f"e2e-images-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "IAAS_DATABASE_URL": database,
        "IAAS_LIBVIRT_URI": URI,
        "IAAS_STORAGE_POOL": name,
        "IAAS_STORAGE_POOL_PATH": str(tmp_path / "pool"),
        "IAAS_HOST": "e2e-images",
        "PYTHONPATH": str(ROOT),
    }
    engine = create_engine(database)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE task_steps, tasks, vms, images CASCADE"))
    yield env
    for volume in virsh("vol-list", "--pool", name, check=False).stdout.split():
        if volume.endswith(".qcow2"):
            virsh("vol-delete", "--pool", name, volume, check=False)
    virsh("pool-destroy", name, check=False)
    virsh("pool-undefine", name, check=False)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE task_steps, tasks, vms, images CASCADE"))
    engine.dispose()


def make_qcow2(path: Path, size: str, pattern: str | None = None) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True, timeout=30)
    if pattern:  # different contents, same size
        subprocess.run(
            ["qemu-io", "-c", f"write -P {pattern} 0 64k", str(path)], check=True, capture_output=True
        )
    return path


def admin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ADMIN, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_import_uploads_through_libvirt_and_records_checksum_and_size(
    pool: dict[str, str], tmp_path: Path, database: str
) -> None:
    source = make_qcow2(tmp_path / "base.qcow2", "32M", pattern="0x5a")
    result = admin(pool, "image", "import", "base", str(source))
    assert result.returncode == 0, result.stderr
    assert "image base imported" in result.stdout

    pool_name = pool["IAAS_STORAGE_POOL"]
    path = virsh("vol-path", "--pool", pool_name, "image-base.qcow2").stdout.strip()
    assert Path(path).read_bytes() == source.read_bytes()  # uploaded byte for byte
    with create_engine(database).connect() as connection:
        row = connection.execute(text("SELECT * FROM images WHERE name = 'base'")).mappings().one()
    assert row["checksum_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert row["size_bytes"] == source.stat().st_size
    assert row["virtual_size_bytes"] == 32 * 1024**2
    assert (row["path"], row["host"], row["format"]) == (path, "e2e-images", "qcow2")

    again = admin(pool, "image", "import", "base", str(source))
    assert again.returncode == 0 and "already registered" in again.stdout

    other = make_qcow2(tmp_path / "other.qcow2", "32M", pattern="0x33")
    clash = admin(pool, "image", "import", "base", str(other))
    assert clash.returncode != 0 and "exists with other contents" in clash.stderr


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("Bad_Name", b"QFI\xfb", "DNS label"),
        ("notqcow", b"\x7fELF" + b"\0" * 100, "not a qcow2 file"),
    ],
)
def test_bad_imports_write_nothing(
    pool: dict[str, str], tmp_path: Path, database: str, name: str, content: bytes, message: str
) -> None:
    source = tmp_path / "input.img"
    source.write_bytes(content)
    result = admin(pool, "image", "import", name, str(source))
    assert result.returncode != 0 and message in result.stderr
    with create_engine(database).connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM images")).scalar() == 0
    listing = virsh("vol-list", "--pool", pool["IAAS_STORAGE_POOL"], check=False).stdout
    assert ".qcow2" not in listing


def test_an_image_with_a_backing_file_is_refused(pool: dict[str, str], tmp_path: Path) -> None:
    base = make_qcow2(tmp_path / "base.qcow2", "16M")
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay)], check=True
    )
    result = admin(pool, "image", "import", "overlay", str(overlay))
    assert result.returncode != 0 and "backing file" in result.stderr
