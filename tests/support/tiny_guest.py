"""The `tiny` image booted by qemu-system directly (no libvirt), with an optional NoCloud seed as a
second virtio disk, and what it prints on its serial console (scripts/build-tiny-image.sh lists the
`tiny:` lines)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.environment import ROOT
from tests.support.polling import poll

TINY_IMAGE = ROOT / "images" / "tiny.qcow2"  # the Makefile's; rebuilt when its script changes
MARKER = "mini-iaas tiny guest: booted"


@dataclass
class TinyGuest:
    process: subprocess.Popen[bytes]
    serial: Path
    started: float  # time.monotonic() right before QEMU was started

    def lines(self) -> list[str]:
        text = self.serial.read_bytes().decode("utf-8", errors="replace") if self.serial.exists() else ""
        return [line.strip() for line in text.splitlines()]

    def wait_for(self, line: str, timeout: float) -> float:
        """Seconds from QEMU's start until the console showed `line` (failing after `timeout`)."""

        def shown() -> float | None:
            if line in self.lines():
                return time.monotonic() - self.started
            if self.process.poll() is not None:
                raise AssertionError(f"qemu exited ({self.process.returncode}): {self.lines()}")
            return None

        return poll(shown, timeout=timeout, interval=0.05, what=f"{line!r} on {self.serial.name}")

    def tiny_lines(self) -> list[str]:
        return [line for line in self.lines() if line.startswith("tiny: ")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


def boot_tiny(
    directory: Path, name: str, *, seed: Path | None = None, nic: tuple[str, str] | None = None
) -> TinyGuest:
    """Boot the tiny image under TCG with a throw-away overlay (snapshot=on). `nic` is (MAC, QEMU
    -netdev value); `seed` an ISO attached read-only as the second virtio disk, as the saga does."""
    if not TINY_IMAGE.exists():
        raise AssertionError(f"{TINY_IMAGE} missing: build it with `make {TINY_IMAGE.relative_to(ROOT)}`")
    serial = directory / f"{name}.serial"
    command = [
        "qemu-system-x86_64", "-name", name, "-machine", "pc", "-accel", "tcg", "-m", "160",
        "-display", "none", "-no-reboot", "-no-user-config", "-monitor", "none",
        "-drive", f"file={TINY_IMAGE},format=qcow2,if=virtio,snapshot=on",
        "-serial", f"file:{serial}",
    ]  # fmt: skip
    if seed is not None:
        command += ["-drive", f"file={seed},format=raw,if=virtio,readonly=on"]
    if nic is not None:
        mac, netdev = nic
        command += ["-netdev", f"{netdev},id=net0", "-device", f"virtio-net-pci,netdev=net0,mac={mac}"]
    stderr = (directory / f"{name}.qemu-stderr").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    stderr.close()
    return TinyGuest(process, serial, started)


def tcp_listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port`, read from /proc (connecting to find out would
    take the one connection QEMU's socket netdev accepts)."""
    wanted = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(row.split()[1] == wanted and row.split()[3] == "0A" for row in rows)
