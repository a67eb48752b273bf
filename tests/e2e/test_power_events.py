"""The lifecycle-event listener (`iaas-events`) against qemu:///system: power changes made out of band
with virsh reach the VM's row within 2 s, also after the listener lost its libvirt connection; a VM
with an active task is left to its task.

Losing the connection: libvirtd itself is stopped (by the pid in its pid file) and started again, as
`make up` starts it; running domains and the other clients survive that (they reconnect). With
IAAS_E2E_RESTART_LIBVIRTD=0 only the listener's own client connection is cut (`virt-admin
client-disconnect`), for machines where libvirtd belongs to systemd."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert

from common.config import Settings
from common.db import transaction
from common.models import Image, Task, Vm
from tests.support.environment import EVENT_LATENCIES, TEST_BROKER
from tests.support.polling import poll
from tests.support.processes import EventsProcess, start_events
from tests.support.tokens import project_id

URI = "qemu:///system"
HOST = "events"
DEADLINE_S = 2.0
RESTART_LIBVIRTD = os.environ.get("IAAS_E2E_RESTART_LIBVIRTD", "1") == "1"
LIBVIRTD_PID_FILE = Path("/run/libvirtd.pid")


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, check=check, timeout=60
    )


def domain_xml(vm_id: uuid.UUID, name: str) -> str:
    """The smallest guest that runs: software emulation, 64 MiB, no disk, no NIC (BIOS finds nothing
    to boot and waits, which is all these tests need)."""
    root = ET.Element("domain", type="qemu")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "uuid").text = str(vm_id)
    ET.SubElement(root, "memory", unit="MiB").text = "64"
    ET.SubElement(root, "vcpu").text = "1"
    ET.SubElement(ET.SubElement(root, "os"), "type").text = "hvm"
    ET.SubElement(root, "devices")
    return ET.tostring(root, encoding="unicode")


@pytest.fixture(scope="module")
def events_settings(database: str) -> Settings:
    return Settings(
        database_url=database, broker_url=TEST_BROKER, libvirt_uri=URI, domain_type="qemu", host=HOST
    )


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("events-logs")


@pytest.fixture(scope="module")
def listener(events_settings: Settings, log_dir: Path, image_row: None) -> Iterator[EventsProcess]:
    process = start_events(events_settings, log_dir)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def image_row(sessions: Any) -> Iterator[None]:
    """The `tiny` image row the VM rows refer to (only the row: these guests have no disk)."""
    row = {
        "name": "tiny", "host": HOST, "pool": "none", "volume": "none", "path": "/nonexistent",
        "format": "qcow2", "size_bytes": 0, "virtual_size_bytes": 0, "checksum_sha256": "0" * 64,
    }  # fmt: skip
    with transaction(sessions) as session:
        made = session.execute(
            insert(Image).values(id=uuid.uuid4(), **row).on_conflict_do_nothing().returning(Image.id)
        ).scalar()
    yield
    if made is not None:
        with transaction(sessions) as session:
            session.execute(delete(Image).where(Image.id == made))


@pytest.fixture
def make_vm(sessions: Any, image_row: None, tmp_path: Path) -> Iterator[Callable[..., uuid.UUID]]:
    """A running domain made with virsh, and its VM row (running, or as asked) with an optional
    pending task. Every domain and row is removed afterwards, even when the test failed."""
    made: list[uuid.UUID] = []

    def make(*, active_task: bool = False) -> uuid.UUID:
        vm_id = uuid.uuid4()
        name = f"iaas-events-{vm_id.hex[:8]}"
        made.append(vm_id)
        with transaction(sessions) as session:
            session.add(
                Vm(id=vm_id, name=name, image="tiny", vcpus=1, memory_mib=64, disk_gib=1,
                   status="running", power_state="running", host=HOST, project_id=project_id(sessions))
            )  # fmt: skip
            session.flush()
            if active_task:
                session.add(Task(kind="reboot_vm", vm_id=vm_id, host=HOST, status="pending"))
        xml_path = tmp_path / f"{name}.xml"
        xml_path.write_text(domain_xml(vm_id, name))
        virsh("define", str(xml_path))
        virsh("start", str(vm_id))
        return vm_id

    yield make
    for vm_id in made:
        virsh("destroy", str(vm_id), check=False)
        virsh("undefine", str(vm_id), check=False)
    with transaction(sessions) as session:
        session.execute(delete(Task).where(Task.vm_id.in_(made)))
        session.execute(delete(Vm).where(Vm.id.in_(made)))


def row(sessions: Any, vm_id: uuid.UUID) -> tuple[str, str]:
    with sessions() as session:
        vm = session.scalars(select(Vm).where(Vm.id == vm_id)).one()
        return vm.status, vm.power_state


def virsh_and_wait(
    sessions: Any,
    listener: EventsProcess,
    command: str,
    vm_id: uuid.UUID,
    expected: tuple[str, str],
    when: str = "",
) -> None:
    """`virsh <command> <uuid>`, then poll (from when virsh returns: a qemu destroy alone takes
    1-2 s) until the row reads `expected`. Records the time from the listener receiving the event
    (its log) to the row reading it."""
    virsh(command, str(vm_id))
    poll(
        lambda: True if row(sessions, vm_id) == expected else None,
        timeout=DEADLINE_S, interval=0.005, what=f"VM {vm_id} to read {expected} after `virsh {command}`",
    )  # fmt: skip
    seen = time.time()
    event = {"start": "started", "destroy": "stopped"}[command]
    received = listener.last_event_at(vm_id, event)
    assert received is not None, f"no {event} event for {vm_id} in {listener.log_path}"
    EVENT_LATENCIES.append((f"{command}{when}", seen - received))


def cut_off(listener: EventsProcess) -> None:
    """Make the listener lose its libvirt connection; return once it has reconnected and re-registered."""
    before = listener.connections()
    if RESTART_LIBVIRTD:
        restart_libvirtd()
    else:
        disconnect_clients_of(listener.process.pid)
    poll(
        lambda: True if listener.connections() > before else None,
        timeout=30, what=f"iaas-events to reconnect (log {listener.log_path})",
    )  # fmt: skip


def disconnect_clients_of(pid: int) -> None:
    """Cut libvirtd's connections to one process (ours), found by the peer pid libvirtd records."""
    listing = subprocess.run(
        ["virt-admin", "srv-clients-list", "libvirtd"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    ids = [line.split()[0] for line in listing.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    cut = 0
    for client_id in ids:
        info = subprocess.run(
            ["virt-admin", "client-info", "libvirtd", client_id], capture_output=True, text=True, timeout=30
        ).stdout
        if f"unix_process_id: {pid}\n" in info:
            subprocess.run(["virt-admin", "client-disconnect", "libvirtd", client_id], check=True, timeout=30)
            cut += 1
    assert cut, f"no libvirtd client belongs to iaas-events (pid {pid}):\n{listing}"


def restart_libvirtd() -> None:
    pid = int(LIBVIRTD_PID_FILE.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    poll(lambda: None if _alive(pid) else True, timeout=30, what=f"libvirtd (pid {pid}) to exit")
    subprocess.run(["libvirtd", "-d"], check=True, timeout=30)
    poll(
        lambda: True if virsh("version", check=False).returncode == 0 else None,
        timeout=30, interval=0.1, what="the restarted libvirtd to answer",
    )  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_out_of_band_power_changes_reach_the_database_also_after_losing_libvirt(
    listener: EventsProcess, make_vm: Callable[..., uuid.UUID], sessions: Any
) -> None:
    vm_id = make_vm()
    virsh_and_wait(sessions, listener, "destroy", vm_id, ("stopped", "shutoff"))
    virsh_and_wait(sessions, listener, "start", vm_id, ("running", "running"))
    virsh_and_wait(sessions, listener, "destroy", vm_id, ("stopped", "shutoff"))

    # A change the listener never hears of (as if its event was lost): the resync on reconnection fixes it.
    with transaction(sessions) as session:
        session.execute(update(Vm).where(Vm.id == vm_id).values(status="running", power_state="running"))
    cut_off(listener)
    poll(
        lambda: True if row(sessions, vm_id) == ("stopped", "shutoff") else None,
        timeout=DEADLINE_S, what="the resync after reconnecting to correct the row",
    )  # fmt: skip

    # The callback is registered again on the new connection.
    after = " after libvirtd restart" if RESTART_LIBVIRTD else " after reconnect"
    virsh_and_wait(sessions, listener, "start", vm_id, ("running", "running"), when=after)
    virsh_and_wait(sessions, listener, "destroy", vm_id, ("stopped", "shutoff"), when=after)


def test_a_vm_with_an_active_task_is_left_to_its_task(
    listener: EventsProcess, make_vm: Callable[..., uuid.UUID], sessions: Any
) -> None:
    busy = make_vm(active_task=True)
    control = make_vm()
    virsh("destroy", str(busy))
    # The listener handles events in order: once the later destroy of `control` is in the database,
    # the earlier one of `busy` has been handled too (no sleep needed to prove a non-change).
    virsh_and_wait(sessions, listener, "destroy", control, ("stopped", "shutoff"), when=" (control)")
    assert row(sessions, busy) == ("running", "running")
    assert f"domain iaas-events-{busy.hex[:8]} ({busy}): stopped" in listener.log()


def test_sigterm_stops_the_listener_cleanly(
    events_settings: Settings, log_dir: Path, image_row: None
) -> None:
    process = start_events(events_settings, log_dir)
    started = time.monotonic()
    assert process.stop() == 0
    assert time.monotonic() - started < 5
    assert "stopped" in process.log().splitlines()[-1]
