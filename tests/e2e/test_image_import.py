"""`iaas-admin image import` for real: a qcow2 uploaded through libvirt into a pool on qemu:///system,
checked with virsh and sha256 -- in a throw-away pool and the test database, not the running stack's.
Each hostile file is made by the real qemu-img and refused by the real command, which leaves nothing
in the pool or the database."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from common.config import Settings
from tests.support.environment import ROOT
from tests.support.tokens import project_id
from worker.hypervisor.connection import Hypervisor
from worker.images import ImageImportError, import_image, open_image_file
from worker.images.qemu_img import Limits, qemu_img_info, verdict

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
        connection.execute(text("TRUNCATE task_steps, tasks, nics, vms, images CASCADE"))
    yield env
    for volume in virsh("vol-list", "--pool", name, check=False).stdout.split():
        if volume.endswith(".qcow2"):
            virsh("vol-delete", "--pool", name, volume, check=False)
    virsh("pool-destroy", name, check=False)
    virsh("pool-undefine", name, check=False)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE task_steps, tasks, nics, vms, images CASCADE"))
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

    # --replace: the rebuilt file takes the name (what `make image` does after the tiny image changed).
    replaced = admin(pool, "image", "import", "--replace", "base", str(other))
    assert replaced.returncode == 0, replaced.stderr
    assert Path(path).read_bytes() == other.read_bytes()
    with create_engine(database).connect() as connection:
        checksum = connection.execute(text("SELECT checksum_sha256 FROM images WHERE name = 'base'")).scalar()
    assert checksum == hashlib.sha256(other.read_bytes()).hexdigest()


def test_replace_is_refused_while_a_vm_uses_the_image(
    pool: dict[str, str], tmp_path: Path, database: str, sessions: Any
) -> None:
    first = make_qcow2(tmp_path / "base.qcow2", "32M", pattern="0x5a")
    assert admin(pool, "image", "import", "base", str(first)).returncode == 0
    project = project_id(sessions)
    engine = create_engine(database)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO vms (id, project_id, name, image, vcpus, memory_mib, disk_gib, status,"
                 " power_state, host) VALUES (:id, :project, 'user', 'base', 1, 64, 1, 'stopped', 'shutoff',"
                 " 'e2e-images')"),
            {"id": uuid.uuid4(), "project": project},
        )  # fmt: skip
    engine.dispose()
    second = make_qcow2(tmp_path / "second.qcow2", "32M", pattern="0x33")
    refused = admin(pool, "image", "import", "--replace", "base", str(second))
    assert refused.returncode != 0 and "is used by 1 VM" in refused.stderr
    path = virsh("vol-path", "--pool", pool["IAAS_STORAGE_POOL"], "image-base.qcow2").stdout.strip()
    assert Path(path).read_bytes() == first.read_bytes()  # untouched


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


def sha256sum(path: str | Path) -> str:
    done = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.split()[0]


def assert_nothing_left(pool: dict[str, str], database: str) -> None:
    engine = create_engine(database)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM images")).scalar() == 0
    engine.dispose()
    listing = virsh("vol-list", "--pool", pool["IAAS_STORAGE_POOL"], check=False).stdout
    assert ".qcow2" not in listing
    pool_dir = Path(pool["IAAS_STORAGE_POOL_PATH"])
    assert not pool_dir.exists() or list(pool_dir.iterdir()) == []


def patched(source: Path, offset: int, data: bytes) -> Path:
    with source.open("r+b") as f:
        f.seek(offset)
        f.write(data)
    return source


# Each builder makes one hostile file in a folder and returns the path to import.


def with_backing_file(d: Path) -> Path:
    make_qcow2(d / "base.qcow2", "16M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(d / "overlay.qcow2"))
    return d / "overlay.qcow2"


def with_data_file(d: Path) -> Path:
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={d / 'data.raw'}", str(d / "df.qcow2"), "16M")
    return d / "df.qcow2"


def encrypted(encryption: str) -> Any:
    def build(d: Path) -> Path:
        secret = f"secret,id=sec0,data={secrets.token_hex(16)}"
        options = f"encrypt.format={encryption},encrypt.key-secret=sec0"
        if encryption == "luks":
            options += ",encrypt.iter-time=10"  # the key derivation need not be slow in a test
        target = d / "enc.qcow2"
        command = ["qemu-img", "create", "-q", "-f", "qcow2", "--object", secret]
        command += ["-o", options, str(target), "16M"]
        # qemu-img times a first round of key derivation with the thread's CPU clock, and gives up with
        # "Unable to get accurate CPU usage" when that clock has not moved (about every other run on a
        # coarse one). Each try fails in milliseconds; 30 leave a failure chance below 1e-7.
        for _attempt in range(30):
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
            if done.returncode == 0:
                return target
            assert "accurate CPU usage" in done.stderr, done.stderr
        raise AssertionError(f"qemu-img could not create an encrypted image: {done.stderr}")

    return build


def of_format(fmt: str) -> Any:
    def build(d: Path) -> Path:
        qemu_img("create", "-q", "-f", fmt, str(d / "disk.qcow2"), "16M")  # labelled qcow2, and is not
        return d / "disk.qcow2"

    return build


def qcow_version_1(d: Path) -> Path:
    return patched(make_qcow2(d / "v1.qcow2", "16M"), 4, b"\0\0\0\1")


def qcow2_and_iso(d: Path) -> Path:
    return patched(make_qcow2(d / "both.qcow2", "16M"), 0x8001, b"CD001\1")


def bad_refcount_table(d: Path) -> Path:  # a header qemu-img's own checks reject
    return patched(make_qcow2(d / "bad.qcow2", "16M"), 48, (0x10007).to_bytes(8, "big"))


def symlink_to_good_image(d: Path) -> Path:
    make_qcow2(d / "good.qcow2", "16M")
    (d / "link.qcow2").symlink_to(d / "good.qcow2")
    return d / "link.qcow2"


def directory(d: Path) -> Path:
    (d / "dir.qcow2").mkdir()
    return d / "dir.qcow2"


def fifo(d: Path) -> Path:
    os.mkfifo(d / "fifo.qcow2")  # opening it to read would wait for a writer: the import must not
    return d / "fifo.qcow2"


HOSTILE = [
    pytest.param(with_backing_file, r"has a backing file \(base.qcow2\)", id="backing-file"),
    pytest.param(with_data_file, "keeps its data in an external data file", id="data-file"),
    pytest.param(encrypted("luks"), r"is encrypted \(LUKS\)", id="encrypted-luks"),
    pytest.param(encrypted("aes"), r"is encrypted \(legacy AES\)", id="encrypted-aes"),
    pytest.param(of_format("raw"), "not a qcow2 file: .*qemu-img convert -f raw", id="raw"),
    pytest.param(of_format("vmdk"), "not a qcow2 file: it is a VMDK image", id="vmdk"),
    pytest.param(of_format("vpc"), "not a qcow2 file: it is a VHD image", id="vhd"),
    pytest.param(qcow_version_1, r"old qcow \(version 1\)", id="qcow-version-1"),
    pytest.param(qcow2_and_iso, "also the signature of an ISO 9660 image", id="qcow2-and-iso"),
    pytest.param(bad_refcount_table, "cannot read .* Reference count table offset", id="qemu-img-fails"),
    pytest.param(symlink_to_good_image, "is a symbolic link", id="symlink"),
    pytest.param(directory, "is a directory, not a regular file", id="directory"),
    pytest.param(fifo, r"is a FIFO \(named pipe\), not a regular file", id="fifo"),
]


@pytest.mark.parametrize(("build", "message"), HOSTILE)
def test_a_hostile_file_is_refused_and_leaves_nothing(
    pool: dict[str, str], tmp_path: Path, database: str, build: Any, message: str
) -> None:
    source = build(tmp_path)
    result = admin(pool, "image", "import", "hostile", str(source))
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert_nothing_left(pool, database)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("Bad_Name", b"QFI\xfb", "DNS label"),
        ("notqcow", b"\x7fELF" + b"\0" * 100, "not a qcow2 file"),
        ("empty", b"", "not a qcow2 file"),
    ],
)
def test_bad_imports_write_nothing(
    pool: dict[str, str], tmp_path: Path, database: str, name: str, content: bytes, message: str
) -> None:
    source = tmp_path / "input.img"
    source.write_bytes(content)
    result = admin(pool, "image", "import", name, str(source))
    assert result.returncode != 0 and message in result.stderr
    assert_nothing_left(pool, database)


def test_a_compressed_qcow2_like_tiny_imports_and_its_sha256_matches_sha256sum(
    pool: dict[str, str], tmp_path: Path, database: str
) -> None:
    # scripts/build-tiny-image.sh makes its image this way: `qemu-img convert -c -f raw -O qcow2`.
    raw = tmp_path / "disk.raw"
    raw.write_bytes(os.urandom(1 << 20) + b"\0" * (3 << 20))
    source = tmp_path / "tiny.qcow2"
    qemu_img("convert", "-q", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(source))
    result = admin(pool, "image", "import", "tiny", str(source))
    assert result.returncode == 0, result.stderr

    with create_engine(database).connect() as connection:
        row = connection.execute(text("SELECT * FROM images WHERE name = 'tiny'")).mappings().one()
    assert row["checksum_sha256"] == sha256sum(source) == sha256sum(row["path"])
    assert row["virtual_size_bytes"] == 4 << 20


def test_the_checks_of_qemu_img_refuse_on_their_own(tmp_path: Path) -> None:
    """The header check runs first and refuses these already; qemu-img's report refuses them too."""
    cases = [
        (with_backing_file, "backing file"),
        (with_data_file, "external data file"),
        (encrypted("luks"), "encrypted"),
    ]
    for index, (build, message) in enumerate(cases):
        folder = tmp_path / str(index)
        folder.mkdir()
        with open_image_file(str(build(folder))) as source, pytest.raises(ImageImportError, match=message):
            verdict(qemu_img_info(source))


def test_qemu_img_runs_under_limits(tmp_path: Path) -> None:
    """A real qemu-img held to 16 MiB of address space cannot run: the limit is really applied, and
    what it does then is a refusal, not a crash of the import."""
    with open_image_file(str(make_qcow2(tmp_path / "good.qcow2", "16M"))) as source:
        assert verdict(qemu_img_info(source)) == 16 << 20
        with pytest.raises(ImageImportError, match=r"qemu-img info (was killed by SIG|cannot read)"):
            qemu_img_info(source, Limits(address_space_bytes=16 << 20))


def test_a_file_written_to_during_the_upload_is_refused_and_its_volume_deleted(
    pool: dict[str, str], tmp_path: Path, database: str, sessions: Any
) -> None:
    """The failure after the volume exists: the upload's own progress callback writes to the file, the
    import notices, and the volume goes again (here the pool exists, so the listing means something)."""
    settings = Settings(
        database_url=database,
        libvirt_uri=URI,
        storage_pool=pool["IAAS_STORAGE_POOL"],
        storage_pool_path=pool["IAAS_STORAGE_POOL_PATH"],
        host=pool["IAAS_HOST"],
    )
    source_path = make_qcow2(tmp_path / "good.qcow2", "16M", pattern="0x5a")
    sent: list[int] = []

    def write_to_the_file(length: int) -> None:
        sent.append(length)
        with source_path.open("r+b") as f:
            f.seek(0x10000)
            f.write(b"tampered")

    hv = Hypervisor(URI)
    try:
        with (
            open_image_file(str(source_path)) as source,
            pytest.raises(ImageImportError, match=r"changed while it was being (uploaded|imported)"),
        ):
            import_image(hv, sessions, settings, "tampered", source, progress=write_to_the_file)
        assert sent, "the upload never started: the volume this test is about was never made"
        assert hv.volume_names(hv.pool(settings)) == []
    finally:
        hv.close()
    assert_nothing_left(pool, database)
