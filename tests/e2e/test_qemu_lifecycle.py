"""End to end: the stack as `make up` starts it (gunicorn, celery worker, Redis, PostgreSQL) against
qemu:///system, checked independently with virsh and qemu-img rather than through our own code."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from common.config import Settings
from tests.support.environment import stack_admin_token
from tests.support.polling import poll

API = os.environ.get("IAAS_API_URL", "http://127.0.0.1:8080")
# The admin token `make up` leaves for the README walk-through: this test is that walk-through.
http = requests.Session()
http.headers["Authorization"] = f"Bearer {stack_admin_token()}"
URI = "qemu:///system"
BOOT_MARKER = "mini-iaas tiny guest: booted"


@pytest.fixture(scope="module")
def stack() -> Settings:
    try:
        ready = requests.get(f"{API}/readyz", timeout=5)
    except requests.ConnectionError as exc:
        raise AssertionError(f"no mini-iaas API at {API}: run `make up` first (make test does)") from exc
    assert ready.status_code == 200, f"the stack is not ready: {ready.text}"
    return Settings()


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, check=check, timeout=60
    )


def wait_for_task(location: str, timeout: float = 120) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        task = http.get(f"{API}{location}", timeout=5).json()
        return task if task["status"] in ("succeeded", "failed") else None

    return poll(finished, timeout=timeout, interval=0.1, what=f"task {location}")


def dominfo(domain_uuid: str) -> dict[str, str]:
    lines = virsh("dominfo", domain_uuid).stdout.splitlines()
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines) if value}


def test_create_runs_a_real_guest_and_delete_leaves_nothing(stack: Settings) -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "image": "tiny", "vcpus": 1, "memory_mib": 128, "disk_gib": 1}
    created = http.post(f"{API}/v1/vms", json=body, timeout=10)
    assert created.status_code == 202, created.text
    vm = created.json()["vm"]
    task = wait_for_task(created.headers["Location"])
    assert task["status"] == "succeeded", task["error"]
    assert http.get(f"{API}/v1/vms/{vm['id']}", timeout=5).json()["status"] == "running"

    # The hypervisor, asked directly: a running domain whose UUID is the VM's id.
    domain = f"iaas-{name}-{vm['id'].replace('-', '')[:8]}"
    assert virsh("domuuid", domain).stdout.strip() == vm["id"]
    info = dominfo(vm["id"])
    assert info["State"] == "running" and info["Name"] == domain
    xml = virsh("dumpxml", vm["id"]).stdout
    assert f"type='{stack.domain_type}'" in xml or stack.domain_type == "auto"
    assert "<interface" not in xml

    # The disk: a qcow2 overlay whose backing file is the image volume, in our pool.
    volume = f"vm-{vm['id']}.qcow2"
    disk_path = virsh("vol-path", "--pool", stack.storage_pool, volume).stdout.strip()
    image_path = virsh("vol-path", "--pool", stack.storage_pool, "image-tiny.qcow2").stdout.strip()
    qemu_info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--force-share", "--output=json", disk_path],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    )  # fmt: skip
    assert qemu_info["format"] == "qcow2"
    assert qemu_info["full-backing-filename"] == image_path
    assert qemu_info["virtual-size"] == 1024**3

    # The guest really boots: its serial console, logged by virtlogd, shows the image's marker.
    console = Path(stack.console_log_dir) / f"{vm['id']}.log"
    poll(
        lambda: True if console.exists() and BOOT_MARKER in console.read_text(errors="replace") else None,
        timeout=90, interval=0.5, what=f"{BOOT_MARKER!r} in {console}",
    )  # fmt: skip

    deleted = http.delete(f"{API}/v1/vms/{vm['id']}", timeout=10)
    assert deleted.status_code == 202, deleted.text
    task = wait_for_task(deleted.headers["Location"])
    assert task["status"] == "succeeded", task["error"]

    assert virsh("dominfo", vm["id"], check=False).returncode != 0
    assert domain not in virsh("list", "--all", "--name").stdout.split()
    assert volume not in virsh("vol-list", "--pool", stack.storage_pool).stdout
    assert not Path(disk_path).exists()
    gone = http.get(f"{API}/v1/vms/{vm['id']}", timeout=5)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    no_console = http.get(f"{API}/v1/vms/{vm['id']}/console", timeout=15)
    assert no_console.status_code == 404 and no_console.json()["error"]["code"] == "not_found"


def booted(console: Path) -> bool | None:
    return True if console.exists() and BOOT_MARKER in console.read_text(errors="replace") else None


def console_through_api(vm_id: str) -> str:
    """The VM's console log as the API answers it (asked of the host's worker): its last MiB, the most
    there is, so that the boot marker is in it however much the guest wrote after it."""
    response = http.get(f"{API}/v1/vms/{vm_id}/console", params={"tail_bytes": 1024**2}, timeout=15)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert int(response.headers["X-Console-Log-Size"]) >= len(response.content)
    return response.text


def booted_through_api(vm_id: str) -> bool | None:
    return True if BOOT_MARKER in console_through_api(vm_id) else None


def test_power_actions_on_a_real_guest(stack: Settings) -> None:
    """Stop is graceful (the tiny guest powers off on the ACPI button), start and reboot bring it back."""
    body = {
        "name": f"e2e-pwr-{uuid.uuid4().hex[:6]}",
        "image": "tiny",
        "vcpus": 1,
        "memory_mib": 128,
        "disk_gib": 1,
    }
    created = http.post(f"{API}/v1/vms", json=body, timeout=10)
    vm_id = created.json()["vm"]["id"]
    assert wait_for_task(created.headers["Location"])["status"] == "succeeded"
    console = Path(stack.console_log_dir) / f"{vm_id}.log"
    try:
        poll(lambda: booted(console), timeout=90, interval=0.5, what="the guest to boot")
        # The same log through the API: the worker of the VM's host reads it for the API, which cannot.
        poll(lambda: booted_through_api(vm_id), timeout=30, interval=0.5, what="the boot marker via the API")

        def act(action: str) -> dict[str, Any]:
            response = http.post(f"{API}/v1/vms/{vm_id}/{action}", timeout=10)
            assert response.status_code == 202, response.text
            return wait_for_task(response.headers["Location"])

        stopped = act("stop")
        assert stopped["status"] == "succeeded", stopped["error"]
        assert virsh("domstate", vm_id).stdout.strip() == "shut off"
        assert "power button" in console.read_text(errors="replace")  # it went down gracefully
        after_stop = console_through_api(vm_id)  # the log outlives the guest's power
        assert BOOT_MARKER in after_stop and "power button" in after_stop
        vm = http.get(f"{API}/v1/vms/{vm_id}", timeout=5).json()
        assert (vm["status"], vm["power_state"]) == ("stopped", "shutoff")
        assert http.post(f"{API}/v1/vms/{vm_id}/stop", timeout=10).json()["error"]["code"] == "invalid_state"

        assert act("start")["status"] == "succeeded"
        assert virsh("domstate", vm_id).stdout.strip() == "running"
        assert act("reboot")["status"] == "succeeded"
        assert virsh("domstate", vm_id).stdout.strip() == "running"
        vm = http.get(f"{API}/v1/vms/{vm_id}", timeout=5).json()
        assert (vm["status"], vm["power_state"]) == ("running", "running")
    finally:
        deleted = http.delete(f"{API}/v1/vms/{vm_id}", timeout=10)
        assert wait_for_task(deleted.headers["Location"])["status"] == "succeeded"
