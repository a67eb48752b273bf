"""Time from POST /v1/vms to task `succeeded` (and DELETE to `succeeded`) on the running stack,
against the raw libvirt cost of the same steps (overlay volume, define, start / destroy, undefine,
delete volume) measured in the same run. Reported as ratios: the control plane's overhead.

    make up && .venv/bin/python -m bench.create_latency --rounds 10   # API: http://$IAAS_API_BIND
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import uuid
from typing import Any

import click
import libvirt

from bench.util import authorize, default_api, http
from common.config import Settings
from worker.hypervisor import domain_xml as libvirt_xml
from worker.hypervisor.connection import Hypervisor

GIB = 1024**3


def _poll_task(api: str, location: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = http.get(f"{api}{location}", timeout=5).json()
        if task["status"] in ("succeeded", "failed"):
            return task
        time.sleep(0.005)  # polling interval: bounds the measurement's resolution to ~5 ms
    raise TimeoutError(f"task {location} did not finish in {timeout} s")


def api_round(api: str) -> tuple[float, float]:
    body = {
        "name": f"bench-{uuid.uuid4().hex[:8]}",
        "image": "tiny",
        "vcpus": 1,
        "memory_mib": 128,
        "disk_gib": 1,
    }
    start = time.perf_counter()
    created = http.post(f"{api}/v1/vms", json=body, timeout=10)
    created.raise_for_status()
    task = _poll_task(api, created.headers["Location"])
    create_s = time.perf_counter() - start
    assert task["status"] == "succeeded", task["error"]
    start = time.perf_counter()
    deleted = http.delete(f"{api}/v1/vms/{created.json()['vm']['id']}", timeout=10)
    deleted.raise_for_status()
    task = _poll_task(api, deleted.headers["Location"])
    assert task["status"] == "succeeded", task["error"]
    return create_s, time.perf_counter() - start


def raw_round(hv: Hypervisor, settings: Settings, image_path: str) -> tuple[float, float]:
    vm_id = uuid.uuid4()
    pool = hv.ensure_pool(settings.storage_pool, settings.storage_pool_path)
    volume = f"bench-raw-{vm_id}.qcow2"
    domain_type = libvirt_xml.resolve_domain_type(settings.domain_type, settings.libvirt_uri)
    try:
        start = time.perf_counter()
        path = pool.createXML(libvirt_xml.overlay_volume_xml(volume, GIB, image_path, "qcow2"), 0).path()
        spec = libvirt_xml.DomainSpec(
            vm_id, f"bench-raw-{vm_id.hex[:6]}", "tiny", 1, 128, path,
            f"{settings.console_log_dir}/{vm_id}.log", domain_type,
        )  # fmt: skip
        hv.conn.defineXML(libvirt_xml.domain_xml(spec)).create()
        create_s = time.perf_counter() - start
        start = time.perf_counter()
        domain = hv.conn.lookupByUUIDString(str(vm_id))
        domain.destroy()
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        pool.storageVolLookupByName(volume).delete(0)
        return create_s, time.perf_counter() - start
    finally:  # never leave a bench domain, volume or console log behind, whatever failed
        hv.undefine_domain(vm_id)
        hv.delete_volume(pool, volume)
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{settings.console_log_dir}/{vm_id}.log")


@click.command()
@click.option("--api", default=default_api, show_default="http://$IAAS_API_BIND")
@click.option("--rounds", default=10, show_default=True, type=click.IntRange(1, 200))
def main(api: str, rounds: int) -> None:
    settings = Settings()
    authorize(settings)
    hv = Hypervisor(settings.libvirt_uri)
    pool = hv.ensure_pool(settings.storage_pool, settings.storage_pool_path)
    image_path = pool.storageVolLookupByName(libvirt_xml.image_volume_name("tiny")).path()
    api_rounds, raw_rounds = [], []
    for i in range(rounds):  # interleaved, so both see the same machine load
        api_rounds.append(api_round(api))
        raw_rounds.append(raw_round(hv, settings, image_path))
        click.echo(f"round {i + 1}/{rounds}: api {api_rounds[-1]}, raw {raw_rounds[-1]}", err=True)
    for label, index in (("create", 0), ("delete", 1)):
        api_med = statistics.median(r[index] for r in api_rounds)
        raw_med = statistics.median(r[index] for r in raw_rounds)
        click.echo(
            f"{label}: api POST->succeeded median {api_med * 1000:.0f} ms, raw libvirt median "
            f"{raw_med * 1000:.0f} ms, ratio {api_med / raw_med:.2f} (n={rounds})"
        )


if __name__ == "__main__":
    main()
