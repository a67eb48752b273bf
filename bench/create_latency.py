"""Time from POST /v1/vms to task `succeeded` (and DELETE to `succeeded`) on the running stack,
against the raw libvirt cost of the same steps (overlay volume, define, start / destroy, undefine,
delete volume) measured in the same run. Reported as ratios: the control plane's overhead.

With `--guest-config` each VM also has a NIC on an isolated network, an SSH key and user-data, and
the raw side does the same work directly: build the NoCloud seed, upload it, make sure of the
libvirt network, define the domain with the NIC and the seed, start it.

    make up && .venv/bin/python -m bench.create_latency --rounds 10   # API: http://$IAAS_API_BIND
    make up && .venv/bin/python -m bench.create_latency --rounds 10 --guest-config
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import click
import libvirt

from bench.util import authorize, default_api, http
from common.config import Settings
from worker.hypervisor import domain_xml as libvirt_xml
from worker.hypervisor import network_xml
from worker.hypervisor.connection import Hypervisor
from worker.seed import SeedInterface, SeedSpec, build_seed_iso

GIB = 1024**3
USER_DATA = "#!/bin/sh\necho configured by bench\n"
# An ed25519 public key made for the benchmark (only its public half exists anywhere).
BENCH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMb1nHcTfZx3eQZbV2P0c7Jx2s4t3k2xj0mCkq3bm9xN bench"


def _poll_task(api: str, location: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = http.get(f"{api}{location}", timeout=5).json()
        if task["status"] in ("succeeded", "failed"):
            return task
        time.sleep(0.005)  # polling interval: bounds the measurement's resolution to ~5 ms
    raise TimeoutError(f"task {location} did not finish in {timeout} s")


def api_round(api: str, config: dict[str, Any]) -> tuple[float, float]:
    body = {
        "name": f"bench-{uuid.uuid4().hex[:8]}",
        "image": "tiny",
        "vcpus": 1,
        "memory_mib": 128,
        "disk_gib": 1,
        **config,
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


def raw_round(
    hv: Hypervisor, settings: Settings, image_path: str, network: str | None
) -> tuple[float, float]:
    vm_id = uuid.uuid4()
    pool = hv.ensure_pool(settings.storage_pool, settings.storage_pool_path)
    volume, seed = f"bench-raw-{vm_id}.qcow2", f"bench-raw-seed-{vm_id}.iso"
    domain_type = libvirt_xml.resolve_domain_type(settings.domain_type, settings.libvirt_uri)
    try:
        start = time.perf_counter()
        path = pool.createXML(libvirt_xml.overlay_volume_xml(volume, GIB, image_path, "qcow2"), 0).path()
        extra: dict[str, Any] = {}
        if network is not None:
            mac = "52:54:00:be:%02x:%02x" % tuple(vm_id.bytes[:2])  # noqa: UP031 - a MAC's own notation
            nic = SeedInterface("eth0", mac, "203.0.113.9/24")
            iso = build_seed_iso(SeedSpec(str(vm_id), "bench-raw", (nic,), (BENCH_KEY,), USER_DATA))
            seed_path = hv.upload_volume(pool, seed, io.BytesIO(iso), len(iso), "raw").path
            hv.ensure_network(network)
            extra = {"seed_path": seed_path, "nics": (libvirt_xml.NicSpec(mac, network),)}
        spec = libvirt_xml.DomainSpec(
            vm_id, f"bench-raw-{vm_id.hex[:6]}", "tiny", 1, 128, path,
            f"{settings.console_log_dir}/{vm_id}.log", domain_type, **extra,
        )  # fmt: skip
        hv.conn.defineXML(libvirt_xml.domain_xml(spec)).create()
        create_s = time.perf_counter() - start
        start = time.perf_counter()
        domain = hv.conn.lookupByUUIDString(str(vm_id))
        domain.destroy()
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        pool.storageVolLookupByName(volume).delete(0)
        if network is not None:
            pool.storageVolLookupByName(seed).delete(0)
        return create_s, time.perf_counter() - start
    finally:  # never leave a bench domain, volume or console log behind, whatever failed
        hv.undefine_domain(vm_id)
        hv.delete_volume(pool, volume)
        hv.delete_volume(pool, seed)
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{settings.console_log_dir}/{vm_id}.log")


@click.command()
@click.option("--api", default=default_api, show_default="http://$IAAS_API_BIND")
@click.option("--rounds", default=10, show_default=True, type=click.IntRange(1, 200))
@click.option("--guest-config", is_flag=True, help="Each VM with a NIC, a key and user-data (a seed).")
def main(api: str, rounds: int, guest_config: bool) -> None:
    settings = Settings()
    authorize(settings)
    hv = Hypervisor(settings.libvirt_uri)
    pool = hv.ensure_pool(settings.storage_pool, settings.storage_pool_path)
    image_path = pool.storageVolLookupByName(libvirt_xml.image_volume_name("tiny")).path()
    with _guest_config(api, hv, settings.host, guest_config) as (config, raw_network):
        api_rounds, raw_rounds = [], []
        for i in range(rounds):  # interleaved, so both see the same machine load
            api_rounds.append(api_round(api, config))
            raw_rounds.append(raw_round(hv, settings, image_path, raw_network))
            click.echo(f"round {i + 1}/{rounds}: api {api_rounds[-1]}, raw {raw_rounds[-1]}", err=True)
    for label, index in (("create", 0), ("delete", 1)):
        api_med = statistics.median(r[index] for r in api_rounds)
        raw_med = statistics.median(r[index] for r in raw_rounds)
        click.echo(
            f"{label}: api POST->succeeded median {api_med * 1000:.0f} ms, raw libvirt median "
            f"{raw_med * 1000:.0f} ms, ratio {api_med / raw_med:.2f} (n={rounds})"
        )


@contextlib.contextmanager
def _guest_config(
    api: str, hv: Hypervisor, host: str, wanted: bool
) -> Iterator[tuple[dict[str, Any], str | None]]:
    """A network and a key for the API's VMs and a libvirt network for the raw ones; removed after."""
    if not wanted:
        yield {}, None
        return
    suffix = uuid.uuid4().hex[:8]
    network = http.post(
        f"{api}/v1/networks", json={"name": f"bench-{suffix}", "cidr": "203.0.113.0/24"}, timeout=10
    )
    network.raise_for_status()
    key = http.post(
        f"{api}/v1/keypairs", json={"name": f"bench-{suffix}", "public_key": BENCH_KEY}, timeout=10
    )
    key.raise_for_status()
    raw_network = network_xml.network_name(host, uuid.uuid4())
    try:
        yield (
            {"networks": [f"bench-{suffix}"], "key_name": f"bench-{suffix}", "user_data": USER_DATA},
            raw_network,
        )
    finally:
        hv.remove_network(raw_network)
        http.delete(f"{api}/v1/keypairs/bench-{suffix}", timeout=10)
        http.delete(f"{api}/v1/networks/{network.json()['id']}", timeout=10)


if __name__ == "__main__":
    main()
