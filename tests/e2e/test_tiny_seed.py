"""The NoCloud seed, end to end without libvirt: worker.seed builds it, the tiny guest finds it by its
label on the second virtio disk and reports on its console what cloud-init would have done. Two
guests share one Ethernet segment -- QEMU's socket netdev over 127.0.0.1, which carries their frames
between the two QEMU processes; nothing is sent from the host to a guest address -- and the second
pings the first at the address its seed gave it."""

from __future__ import annotations

import hashlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.environment import SEED_BOOT_TIMES
from tests.support.polling import poll
from tests.support.ssh_keys import ed25519_key, public_line
from tests.support.tiny_guest import MARKER, TinyGuest, boot_tiny, tcp_listening
from worker.seed import SeedInterface, SeedSpec, build_seed_iso

BOOT_TIMEOUT = 240  # two TCG guests on two cores, and the second one's pings
FIRST = SeedInterface("eth0", "52:54:00:5e:ed:01", "198.51.100.11/24")
SECOND = SeedInterface("eth0", "52:54:00:5e:ed:02", "198.51.100.12/24")
# Non-ASCII, a CRLF and no final newline: the sha256 the guest prints is of these bytes exactly.
FIRST_USER_DATA = "#!/bin/sh\necho 'grüße from the first guest'\r\nexit 7"
SECOND_USER_DATA = "#cloud-config\n#tiny:ping 198.51.100.11\nruncmd: []\n"


@pytest.fixture
def guests() -> Iterator[list[TinyGuest]]:
    started: list[TinyGuest] = []
    yield started
    for guest in started:
        guest.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ssh_keygen_fingerprint(line: str, directory: Path) -> str:
    path = directory / "key.pub"
    path.write_text(line + "\n")
    done = subprocess.run(["ssh-keygen", "-lf", str(path)], capture_output=True, text=True, check=True)
    return done.stdout.split()[1]


def write_seed(directory: Path, name: str, spec: SeedSpec) -> Path:
    path = directory / f"{name}-seed.iso"
    path.write_bytes(build_seed_iso(spec))
    return path


def test_two_guests_configure_themselves_from_their_seeds_and_reach_each_other(
    tmp_path: Path, guests: list[TinyGuest]
) -> None:
    key = public_line(ed25519_key())
    first = SeedSpec("vm-seed-first", "first", (FIRST,), (key,), FIRST_USER_DATA)
    second = SeedSpec("vm-seed-second", "second", (SECOND,), (), SECOND_USER_DATA)
    port = free_port()

    guests.append(
        boot_tiny(tmp_path, "first", seed=write_seed(tmp_path, "first", first),
                  nic=(FIRST.mac, f"socket,listen=127.0.0.1:{port}"))
    )  # fmt: skip
    poll(lambda: tcp_listening(port) or None, timeout=30, what=f"qemu listening on 127.0.0.1:{port}")
    guests.append(
        boot_tiny(tmp_path, "second", seed=write_seed(tmp_path, "second", second),
                  nic=(SECOND.mac, f"socket,connect=127.0.0.1:{port}"))
    )  # fmt: skip
    times = [guest.wait_for("tiny: configured", BOOT_TIMEOUT) for guest in guests]
    for guest in guests:
        guest.wait_for(MARKER, 30)
    SEED_BOOT_TIMES.extend(zip(("first (no pings)", "second (pings the first)"), times, strict=True))
    print(f"qemu start -> 'tiny: configured': first {times[0]:.2f} s, second {times[1]:.2f} s")

    one, two = (guest.tiny_lines() for guest in guests)
    assert one == [
        "tiny: seed found on /dev/vdb",
        "tiny: instance-id vm-seed-first",
        "tiny: hostname first",
        "tiny: interface eth0 mac 52:54:00:5e:ed:01 address 198.51.100.11/24",
        f"tiny: authorized key {ssh_keygen_fingerprint(key, tmp_path)}",
        f"tiny: user-data sha256 {hashlib.sha256(FIRST_USER_DATA.encode()).hexdigest()}",
        "tiny: user script exit 7",
        "tiny: configured",
    ]
    assert "grüße from the first guest" in guests[0].lines()  # the script's output, on the console
    assert two == [
        "tiny: seed found on /dev/vdb",
        "tiny: instance-id vm-seed-second",
        "tiny: hostname second",
        "tiny: interface eth0 mac 52:54:00:5e:ed:02 address 198.51.100.12/24",
        f"tiny: user-data sha256 {hashlib.sha256(SECOND_USER_DATA.encode()).hexdigest()}",
        "tiny: ping 198.51.100.11 answered",
        "tiny: configured",
    ]


def test_without_a_seed_the_guest_says_so_and_still_boots(tmp_path: Path, guests: list[TinyGuest]) -> None:
    guests.append(boot_tiny(tmp_path, "bare"))
    guests[0].wait_for(MARKER, BOOT_TIMEOUT)
    assert guests[0].tiny_lines() == ["tiny: no seed", "tiny: configured"]
