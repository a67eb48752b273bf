"""The file being imported, opened exactly once: every later read (header, qemu-img, checksum, upload)
goes through that one descriptor, so what is inspected is what is uploaded."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from worker.images.errors import ImageImportError

# O_NOFOLLOW: a symlink is refused rather than followed, so nobody can point it elsewhere between
# checks. O_NONBLOCK and O_NOCTTY, beyond the read-only open the import needs: opening a FIFO for
# reading would otherwise wait for a writer (the command would hang before fstat could refuse it), and
# a terminal must not become our controlling one. Neither changes how a regular file is read.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
CHUNK = 1 << 20

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    return next((kind for is_kind, kind in _KINDS if is_kind(mode)), "not a regular file")


@dataclass(frozen=True)
class ImageFile:
    """An open regular file, read by offset (os.pread): no shared file position to get wrong."""

    path: str
    fd: int
    size: int
    changed_ns: int  # st_ctime_ns at open: any write to the inode moves it, and no owner can set it back

    def read_at(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def chunks(self) -> Iterator[bytes]:
        offset = 0
        while offset < self.size and (block := self.read_at(offset, min(CHUNK, self.size - offset))):
            offset += len(block)
            yield block

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for block in self.chunks():
            digest.update(block)
        return digest.hexdigest()

    def reader(self, progress: Callable[[int], None]) -> HashingReader:
        return HashingReader(self, progress)

    def check_unchanged(self) -> None:
        """Refuse a file that was written to since it was opened: the checks saw other bytes."""
        now = os.fstat(self.fd)
        if now.st_size != self.size or now.st_ctime_ns != self.changed_ns:
            raise ImageImportError(
                f"{self.path} changed while it was being imported; import a copy that nothing writes to"
            )


class HashingReader:
    """What the upload reads: the file from offset 0, hashed on the way, so the bytes that reach the
    pool can be compared with the checksum that is recorded."""

    def __init__(self, source: ImageFile, progress: Callable[[int], None]) -> None:
        self._source = source
        self._progress = progress
        self._digest = hashlib.sha256()
        self.offset = 0

    def read(self, length: int, /) -> bytes:
        data = self._source.read_at(self.offset, max(0, min(length, self._source.size - self.offset)))
        self.offset += len(data)
        self._digest.update(data)
        self._progress(len(data))
        return data

    def check_sent(self, checksum: str) -> None:
        if self.offset != self._source.size or self._digest.hexdigest() != checksum:
            raise ImageImportError(
                f"{self._source.path} changed while it was being uploaded; import a copy that nothing "
                "writes to"
            )


@contextmanager
def open_image_file(path: str) -> Iterator[ImageFile]:
    """Open `path` once, refusing a symlink and anything that is not a regular file."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as exc:
        raise ImageImportError(_open_failure(path, exc)) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageImportError(
                f"{path} is {kind_of(st.st_mode)}, not a regular file; give the path of a qcow2 file"
            )
        yield ImageFile(path=path, fd=fd, size=st.st_size, changed_ns=st.st_ctime_ns)
    finally:
        os.close(fd)


def _open_failure(path: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return (
            f"{path} is a symbolic link; links are not followed, so that what is checked is what is "
            f"imported: give the path of the file itself (readlink -f {path})"
        )
    if exc.errno == errno.ENXIO:  # a socket, or a device without its driver
        return f"{path} is not a regular file (it cannot be opened to read); give the path of a qcow2 file"
    if exc.errno == errno.ENOENT:
        return f"{path} does not exist"
    return f"cannot open {path}: {exc.strerror}"
