"""End to end on qemu:///system: guests that are usable. Two VMs on one isolated network, with a key
and user-data; what each guest applied is read from its own serial console, through the API, and the
hypervisor's side (network, NICs, seed volume) is checked with virsh and ip, not through our code.
No packet is sent from the host to a guest: the guests ping each other."""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common.config import Settings
from tests.e2e.test_qemu_lifecycle import API, console_through_api, http, stack, virsh, wait_for_task
from tests.support.polling import poll
from tests.support.ssh_keys import ed25519_key, expected_fingerprint, public_line
from worker.hypervisor import network_xml

__all__ = ["stack"]  # the fixture, shared with the lifecycle test
CONFIGURED = "tiny: configured"
BOOT_TIMEOUT_S = 240  # two TCG guests booting at once on two cores


def created(path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(f"{API}{path}", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def create_vm(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    response = http.post(f"{API}/v1/vms", json=body, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["vm"], response.headers["Location"]


def configured_console(vm_id: str) -> str | None:
    text = console_through_api(vm_id)
    return text if CONFIGURED in text else None


def delete_vm(vm_id: str) -> None:
    response = http.delete(f"{API}/v1/vms/{vm_id}", timeout=10)
    if response.status_code == 202:
        assert wait_for_task(response.headers["Location"])["status"] == "succeeded"


def test_two_configured_guests_on_an_isolated_network(stack: Settings) -> None:
    suffix = uuid.uuid4().hex[:6]
    network = created("/v1/networks", {"name": f"e2e-net-{suffix}", "cidr": "198.51.100.0/24"})
    key_line = public_line(ed25519_key())
    key = created("/v1/keypairs", {"name": f"e2e-key-{suffix}", "public_key": key_line})
    libvirt_network = network_xml.network_name(stack.host, uuid.UUID(network["id"]))
    first_data = "#!/bin/sh\necho 'hello from user-data'\n"
    started = time.monotonic()
    first, first_task = create_vm({
        "name": f"e2e-a-{suffix}", "image": "tiny", "vcpus": 1, "memory_mib": 128, "disk_gib": 1,
        "networks": [network["name"]], "key_name": key["name"], "user_data": first_data,
    })  # fmt: skip
    vm_ids = [first["id"]]
    try:
        [first_address] = first["addresses"]  # known from the moment the create is accepted
        assert first_address["ip"] == "198.51.100.1" and first_address["mac"].startswith("52:54:00:")
        second_data = f"#tiny:ping {first_address['ip']}\n"
        second, second_task = create_vm({
            "name": f"e2e-b-{suffix}", "image": "tiny", "vcpus": 1, "memory_mib": 128, "disk_gib": 1,
            "networks": [{"network": network["id"], "ip": "198.51.100.20"}], "user_data": second_data,
        })  # fmt: skip
        vm_ids.append(second["id"])
        for location in (first_task, second_task):
            task = wait_for_task(location)
            assert task["status"] == "succeeded", task["error"]

        # The hypervisor's side, asked directly.
        net = ET.fromstring(virsh("net-dumpxml", libvirt_network).stdout)  # noqa: S314 - libvirtd's own
        assert net.find("forward") is None and net.find("ip") is None  # isolated: no NAT, no host address
        bridge = net.find("bridge").get("name")  # type: ignore[union-attr]
        show = ["ip", "-o", "addr", "show", "dev", bridge]
        host_addresses = subprocess.run(show, capture_output=True, text=True, check=True, timeout=10).stdout
        assert host_addresses.strip() == "", f"the host has an address on {bridge}: {host_addresses}"
        for vm in (first, second):
            domain = ET.fromstring(virsh("dumpxml", vm["id"]).stdout)  # noqa: S314 - libvirtd's own
            [interface] = domain.findall("devices/interface")
            assert interface.find("source").get("network") == libvirt_network  # type: ignore[union-attr]
            assert interface.find("mac").get("address") == vm["addresses"][0]["mac"]  # type: ignore[union-attr]
            assert f"seed-{vm['id']}.iso" in virsh("vol-list", "--pool", stack.storage_pool).stdout

        # The guests' own word, through the API.
        first_console = poll(lambda: configured_console(first["id"]), timeout=BOOT_TIMEOUT_S, interval=1,
                             what=f"{CONFIGURED!r} on the first guest")  # fmt: skip
        boot_s = time.monotonic() - started
        print(f"\nboot to configured (POST to the guest's line, first guest): {boot_s:.1f} s")
        assert f"tiny: hostname {first['name']}" in first_console
        assert f"tiny: instance-id {first['id']}" in first_console
        assert f"mac {first_address['mac']} address 198.51.100.1/24" in first_console
        assert f"tiny: user-data sha256 {hashlib.sha256(first_data.encode()).hexdigest()}" in first_console
        assert f"tiny: authorized key {expected_fingerprint(key_line)}" in first_console
        assert key["fingerprint"] == expected_fingerprint(key_line)
        assert "hello from user-data" in first_console
        second_console = poll(lambda: configured_console(second["id"]), timeout=BOOT_TIMEOUT_S, interval=1,
                              what=f"{CONFIGURED!r} on the second guest")  # fmt: skip
        assert "address 198.51.100.20/24" in second_console
        assert f"tiny: ping {first_address['ip']} answered" in second_console
        assert "tiny: authorized key" not in second_console  # no key was asked for

        # A stopped VM's console is still readable.
        stop = http.post(f"{API}/v1/vms/{first['id']}/stop", timeout=10)
        assert wait_for_task(stop.headers["Location"])["status"] == "succeeded"
        assert CONFIGURED in console_through_api(first["id"])

        busy = http.delete(f"{API}/v1/networks/{network['id']}", timeout=10)
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "network_in_use"
    finally:
        for vm_id in vm_ids:
            delete_vm(vm_id)
    for vm_id in vm_ids:
        assert f"seed-{vm_id}.iso" not in virsh("vol-list", "--pool", stack.storage_pool).stdout
    assert http.delete(f"{API}/v1/networks/{network['id']}", timeout=10).status_code == 204
    poll(lambda: True if virsh("net-info", libvirt_network, check=False).returncode != 0 else None,
         timeout=30, interval=0.2, what=f"libvirt network {libvirt_network} to be removed")  # fmt: skip
    http.delete(f"{API}/v1/keypairs/{key['name']}", timeout=10)


def test_creates_at_once_each_get_their_seed_and_address(stack: Settings) -> None:
    """Eight creates at once on one network: every seed upload and the network step of each succeed
    side by side (libvirt refuses a pool refresh while another upload runs: none is asked for)."""
    suffix = uuid.uuid4().hex[:6]
    network = created("/v1/networks", {"name": f"e2e-many-{suffix}", "cidr": "203.0.113.0/28"})
    with ThreadPoolExecutor(8) as pool:
        accepted = list(pool.map(lambda i: create_vm({
            "name": f"e2e-many-{suffix}-{i}", "image": "tiny", "vcpus": 1, "memory_mib": 128, "disk_gib": 1,
            "networks": [network["name"]], "user_data": f"#!/bin/sh\necho guest {i}\n",
        }), range(8)))  # fmt: skip
        tasks = list(pool.map(lambda vm_and_task: wait_for_task(vm_and_task[1]), accepted))
    try:
        assert [t["status"] for t in tasks] == ["succeeded"] * 8, [t["error"] for t in tasks]
        assert len({vm["addresses"][0]["ip"] for vm, _ in accepted}) == 8
        volumes = virsh("vol-list", "--pool", stack.storage_pool).stdout
        assert all(f"seed-{vm['id']}.iso" in volumes for vm, _ in accepted)
    finally:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda vm_and_task: delete_vm(vm_and_task[0]["id"]), accepted))
    assert http.delete(f"{API}/v1/networks/{network['id']}", timeout=10).status_code == 204
