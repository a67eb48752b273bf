"""`qemu-img info` on the open file, fenced in, and its JSON report turned into a verdict.

qemu-img parses whatever it is given, so it runs the way the OpenStack image-conversion advisories of
2024 (OSSA-2024-001/002) settled on: no shell, an explicit `-f` so qemu-img never guesses the format,
and resource limits (1 GiB of address space, 30 s of CPU) so a crafted file cannot make it eat the
host. It reads the very inode that was opened, through /proc/self/fd/N of a descriptor it inherits.
The limits are set by util-linux's `prlimit`, which then execs qemu-img: a `preexec_fn` would do the
same, but Python warns that it can deadlock in a process with threads, as a worker's is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from typing import Any

from worker.images.errors import ImageImportError
from worker.images.formats import refuse_backing_file, refuse_data_file, refuse_encryption
from worker.images.source import ImageFile

FORMAT = "qcow2"
_ENCRYPTION_NAMES = {"aes": "legacy AES", "luks": "LUKS"}  # as formats.py names them from the header


@dataclass(frozen=True)
class Limits:
    address_space_bytes: int = 1 << 30
    cpu_seconds: int = 30
    wall_seconds: int = 120  # a qemu-img stuck on I/O uses no CPU; this bounds that wait too

    def describe(self) -> str:
        return f"{self.address_space_bytes >> 20} MiB of address space, {self.cpu_seconds} s of CPU"


DEFAULT_LIMITS = Limits()


def qemu_img_info(source: ImageFile, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """qemu-img's JSON description of `source` read as qcow2, or ImageImportError."""
    fd_path = f"/proc/self/fd/{source.fd}"
    command = [
        "prlimit",
        f"--as={limits.address_space_bytes}",
        f"--cpu={limits.cpu_seconds}",
        "--",
        "qemu-img",
        "info",
        "--output=json",
        "--force-share",  # only reads; take no lock that a running VM's qemu could hold
        "-f",
        FORMAT,
        fd_path,
    ]
    try:
        done = subprocess.run(
            command,
            pass_fds=(source.fd,),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=limits.wall_seconds,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    except FileNotFoundError as exc:
        raise ImageImportError(
            "prlimit is not installed, and qemu-img never runs without limits: install util-linux"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageImportError(
            f"qemu-img info did not finish within {limits.wall_seconds} s on {source.path}; "
            "do not import it (is the file on a hung file system?)"
        ) from exc
    stderr = done.stderr.decode("utf-8", "replace").replace(fd_path, source.path).strip()
    if done.returncode < 0:
        raise ImageImportError(
            f"qemu-img info was killed by {signal.Signals(-done.returncode).name} under its limits "
            f"({limits.describe()}) while reading {source.path}: it is no image qemu-img reads safely; "
            "do not import it"
        )
    if done.returncode != 0:
        reason = stderr.splitlines()[-1] if stderr else f"exit status {done.returncode}"
        raise ImageImportError(
            f"qemu-img info cannot read {source.path} as qcow2: {reason}; check where the file comes "
            f"from and what it is: qemu-img check -f qcow2 {source.path}"
        )
    try:
        info = json.loads(done.stdout)
    except ValueError as exc:
        raise ImageImportError(f"qemu-img info printed no JSON for {source.path}: {exc}") from exc
    if not isinstance(info, dict):
        raise ImageImportError(f"qemu-img info printed no JSON object for {source.path}")
    return info


def verdict(info: dict[str, Any]) -> int:
    """The virtual size of an image qemu-img described as `info`, or ImageImportError for one that
    is not a self-contained, unencrypted qcow2."""
    specific = info.get("format-specific")
    specific = specific if isinstance(specific, dict) else {}
    data = specific.get("data")
    data = data if isinstance(data, dict) else {}
    if info.get("format") != FORMAT or specific.get("type", FORMAT) != FORMAT:
        raise ImageImportError(
            f"qemu-img reads the file as {info.get('format')!r}, not qcow2; convert it first: "
            "qemu-img convert -O qcow2 IN OUT.qcow2"
        )
    backing = info.get("backing-filename") or info.get("full-backing-filename")
    if backing:
        refuse_backing_file(str(backing))
    if data.get("data-file") or data.get("data-file-raw"):
        refuse_data_file()
    if info.get("encrypted") or "encrypt" in data:
        encrypt = data.get("encrypt")
        method = encrypt.get("format") if isinstance(encrypt, dict) else None
        refuse_encryption(_ENCRYPTION_NAMES.get(str(method), f"method {method}"))
    size = info.get("virtual-size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ImageImportError(f"qemu-img reports no usable virtual size ({size!r}); do not import it")
    return size
