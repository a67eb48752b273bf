"""Reading the end of a VM's serial console log, for the `console_tail` remote-control command.

The path comes from the settings and the VM id alone (a UUID, so it cannot climb out of the folder),
never from the request; the file is opened without following a symbolic link, and only a regular file
is read. A log that does not exist (yet, or any more) is an empty one."""

from __future__ import annotations

import os
import stat
import uuid

from common.config import Settings
from common.console import ConsoleTail


def log_path(settings: Settings, vm_id: uuid.UUID) -> str:
    """Where virtlogd writes the VM's serial console (the domain XML names this file)."""
    return os.path.join(settings.console_log_dir, f"{vm_id}.log")


def read_tail(path: str, tail_bytes: int) -> ConsoleTail:
    """The last `tail_bytes` of the file at `path` (fewer if it is shorter; none if it is missing)."""
    try:
        # O_NONBLOCK: a FIFO planted in the folder must not hang the worker's control thread.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return ConsoleTail(b"", 0, 0)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        offset = max(0, info.st_size - tail_bytes)
        chunks: list[bytes] = []
        position = offset
        while position < info.st_size:  # virtlogd may append meanwhile: read only what fstat saw
            chunk = os.pread(fd, info.st_size - position, position)
            if not chunk:  # truncated (rotated) meanwhile
                break
            chunks.append(chunk)
            position += len(chunk)
        return ConsoleTail(b"".join(chunks), offset, info.st_size)
    finally:
        os.close(fd)
