"""The imported file, opened once and read through that descriptor only (on files in tmp_path)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from worker.images import ImageImportError, open_image_file
from worker.images.source import CHUNK


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "image.qcow2"
    path.write_bytes(os.urandom(CHUNK * 2 + 123))  # more than one chunk, and a short last one
    return path


def test_checksum_and_upload_read_the_whole_file_by_offset(image: Path) -> None:
    sent: list[int] = []
    with open_image_file(str(image)) as source:
        checksum = source.sha256()
        assert checksum == hashlib.sha256(image.read_bytes()).hexdigest()
        reader = source.reader(sent.append)
        data = b"".join(iter(lambda: reader.read(65536), b""))
        reader.check_sent(checksum)
        source.check_unchanged()
    assert data == image.read_bytes() and sum(sent) == image.stat().st_size


def test_a_write_after_opening_is_noticed(image: Path) -> None:
    with open_image_file(str(image)) as source:
        checksum = source.sha256()
        with image.open("r+b") as other:
            other.write(b"changed")
        reader = source.reader(lambda _n: None)
        while reader.read(CHUNK):
            pass
        with pytest.raises(ImageImportError, match="changed while it was being uploaded"):
            reader.check_sent(checksum)
        with pytest.raises(ImageImportError, match="changed while it was being imported"):
            source.check_unchanged()


def test_the_descriptor_is_closed_whatever_happens(image: Path) -> None:
    with pytest.raises(RuntimeError), open_image_file(str(image)) as source:
        fd = source.fd
        raise RuntimeError
    with pytest.raises(OSError):
        os.fstat(fd)


@pytest.mark.parametrize("target", ["image.qcow2", "missing.qcow2"])
def test_a_symlink_is_refused_even_to_a_good_file(image: Path, target: str) -> None:
    link = image.parent / "link.qcow2"
    link.symlink_to(target)
    with pytest.raises(ImageImportError, match="is a symbolic link"), open_image_file(str(link)):
        pass


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ImageImportError, match="does not exist"), open_image_file(str(tmp_path / "no")):
        pass
