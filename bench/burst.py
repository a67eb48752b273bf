"""A burst of 20 creates through the API against the same libvirt work done directly with the worker's
4 threads, in the same run; and `GET /v1/tasks/<id>` latency from a separate client while it runs.

    make up   # with the IAAS_* variables of your stack exported
    .venv/bin/python -m bench.burst --repeats 3

API burst: 20 clients POST /v1/vms at once (a barrier releases them together), then each polls its own
task every --poll-interval (50 ms) -- or, with --long-poll S, holds a `GET …?wait=S` open until the task
changes -- until `succeeded`; the wall time runs from the release to the last
client seeing `succeeded` (its resolution is the poll interval), and `server` from the release to the
latest `finished_at` (no polling in it). Meanwhile one more thread GETs the burst's tasks round-robin,
one request every --probe-interval (20 ms), and records each latency. Raw burst: the same 20 overlays,
definitions and starts (createXML, defineXML, create) with a pool of --threads (the worker's
IAAS_WORKER_CONCURRENCY, 4) on one shared connection, as the worker shares one. Repeats alternate
which goes first. Targets (the issue): API/raw <= 1.15, GET p50 <= 5 ms while the burst runs.

Afterwards the API's VMs are deleted through the API (and waited for), the raw ones directly."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from bench.util import authorize, default_api, http, median, percentile, table
from common.config import Settings
from worker.hypervisor import domain_xml as libvirt_xml
from worker.hypervisor.connection import Hypervisor

GIB = 1024**3
TERMINAL = ("succeeded", "failed")


@dataclass
class ApiBurst:
    wall_s: float = 0.0
    server_s: float = 0.0
    polls: int = 0
    probe_ms: list[float] = field(default_factory=list)
    run_s: list[float] = field(default_factory=list)  # per task: claim (started_at) -> finished_at
    start_s: list[float] = field(default_factory=list)  # per task: its start_domain step
    vm_ids: list[str] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _wait(
    api: str, location: str, interval: float, timeout: float = 300, long_poll: float = 0
) -> tuple[dict[str, Any], int]:
    """Poll a task until it ends (every `interval`, or with `long_poll` > 0 by asking the API to hold
    each GET until the task changes, for at most that many seconds); returns it and how many GETs
    that took."""
    deadline = time.monotonic() + timeout
    polls = 0
    params: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        task = http.get(f"{api}{location}", params=params, timeout=10 + long_poll).json()
        polls += 1
        if task["status"] in TERMINAL:
            return task, polls
        if long_poll:  # held until the task differs from the version this answer showed
            params = {"wait": long_poll, "seen": task["version"]}
        else:
            time.sleep(interval)
    raise TimeoutError(f"task {location} did not finish in {timeout} s")


def probe(api: str, locations: list[str], interval: float, stop: threading.Event, out: list[float]) -> None:
    """GET the burst's tasks round-robin, one at a time, and record each latency (ms)."""
    while not locations and not stop.is_set():
        time.sleep(0.001)
    for i in itertools.count():
        if stop.is_set():
            return
        start = time.perf_counter()
        http.get(f"{api}{locations[i % len(locations)]}", timeout=10)
        out.append((time.perf_counter() - start) * 1000)
        stop.wait(interval)


def api_burst(
    api: str, image: str, n: int, poll_interval: float, probe_interval: float, long_poll: float = 0
) -> ApiBurst:
    result = ApiBurst()
    barrier = threading.Barrier(n + 1)
    locations = result.locations
    finished: list[datetime] = []
    lock = threading.Lock()
    prefix = f"burst-{uuid.uuid4().hex[:6]}"
    t0 = 0.0

    def client(i: int) -> float:
        body = {"name": f"{prefix}-{i}", "image": image, "vcpus": 1, "memory_mib": 128, "disk_gib": 1}
        barrier.wait()
        created = http.post(f"{api}/v1/vms", json=body, timeout=30)
        created.raise_for_status()
        with lock:
            locations.append(created.headers["Location"])
            result.vm_ids.append(created.json()["vm"]["id"])
        task, polls = _wait(api, created.headers["Location"], poll_interval, long_poll=long_poll)
        seen = time.perf_counter()
        with lock:
            result.polls += polls
            finished.append(datetime.fromisoformat(task["finished_at"]))
            result.run_s.append(_seconds(task["started_at"], task["finished_at"]))
            result.start_s += [
                _seconds(step["started_at"], step["finished_at"])
                for step in task["steps"]
                if step["name"] == "start_domain" and step["finished_at"]
            ]
            if task["status"] != "succeeded":
                result.failures.append(f"{body['name']}: {task['error']}")
        return seen

    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(api, locations, probe_interval, stop, result.probe_ms))
    prober.start()
    cpu_before = cpu_by_component()
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(client, i) for i in range(n)]
        barrier.wait()
        t0, wall0 = time.perf_counter(), time.time()
        seen = [f.result() for f in futures]
    result.cpu_s = cpu_delta(cpu_before, cpu_by_component())
    stop.set()
    prober.join()
    result.wall_s = max(seen) - t0
    result.server_s = max(f.timestamp() for f in finished) - wall0
    return result


CLK_TCK = os.sysconf("SC_CLK_TCK")
RUN_DIR = Path(os.environ.get("RUN_DIR", Path(__file__).resolve().parents[1] / ".run"))


def cpu_by_component() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each process group of the stack (scripts/stack.sh
    starts each with setsid and writes its pid file to RUN_DIR), by libvirtd, by all PostgreSQL
    backends and by all qemu processes (both shared with whatever else runs here). From /proc; a
    process that exits during the burst takes its CPU time with it."""
    groups = {}
    for pid_file in RUN_DIR.glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            groups[int(pid_file.read_text().strip())] = pid_file.stem
    used: dict[str, float] = defaultdict(float)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        pgid, seconds = int(fields[2]), (int(fields[11]) + int(fields[12])) / CLK_TCK
        if pgid in groups:
            used[groups[pgid]] += seconds
        elif comm == "libvirtd":
            used["libvirtd"] += seconds
        elif comm == "postgres":
            used["postgres (all databases)"] += seconds
        elif comm.startswith("qemu-system"):
            used["qemu (every guest on the host)"] += seconds
    return used


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(set(before) | set(after))}


def _seconds(start: str | None, end: str | None) -> float:
    assert start is not None and end is not None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def delete_through_api(api: str, vm_ids: list[str]) -> None:
    def one(vm_id: str) -> None:
        deleted = http.delete(f"{api}/v1/vms/{vm_id}", timeout=30)
        if deleted.status_code == 404:
            return
        deleted.raise_for_status()
        task, _ = _wait(api, deleted.headers["Location"], 0.1)
        if task["status"] != "succeeded":
            click.echo(f"delete of {vm_id} failed: {task['error']}", err=True)

    with ThreadPoolExecutor(len(vm_ids) or 1) as pool:
        list(pool.map(one, vm_ids))


@dataclass(frozen=True)
class RawVm:
    vm_id: uuid.UUID
    volume: str


@dataclass
class RawBurst:
    wall_s: float = 0.0
    build_s: list[float] = field(default_factory=list)  # per VM: volume + define + start
    start_s: list[float] = field(default_factory=list)  # per VM: create() alone
    vms: list[RawVm] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)


def raw_burst(hv: Hypervisor, settings: Settings, image_path: str, n: int, threads: int) -> RawBurst:
    pool = hv.ensure_pool(settings.storage_pool, settings.storage_pool_path)
    domain_type = libvirt_xml.resolve_domain_type(settings.domain_type, settings.libvirt_uri)
    vms = [RawVm(vm_id, f"bench-raw-{vm_id}.qcow2") for vm_id in (uuid.uuid4() for _ in range(n))]
    result = RawBurst(vms=vms)

    def build(vm: RawVm) -> None:
        began = time.perf_counter()
        path = pool.createXML(libvirt_xml.overlay_volume_xml(vm.volume, GIB, image_path, "qcow2"), 0).path()
        spec = libvirt_xml.DomainSpec(
            vm.vm_id, f"bench-raw-{vm.vm_id.hex[:8]}", "tiny", 1, 128, path,
            f"{settings.console_log_dir}/{vm.vm_id}.log", domain_type,
        )  # fmt: skip
        domain = hv.conn.defineXML(libvirt_xml.domain_xml(spec))
        starting = time.perf_counter()
        domain.create()
        result.start_s.append(time.perf_counter() - starting)
        result.build_s.append(time.perf_counter() - began)

    cpu_before = cpu_by_component()
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as executor:
        list(executor.map(build, vms))
    result.wall_s = time.perf_counter() - start
    result.cpu_s = cpu_delta(cpu_before, cpu_by_component())
    return result


def raw_teardown(hv: Hypervisor, settings: Settings, vms: list[RawVm]) -> None:
    pool = hv.ensure_pool(settings.storage_pool, settings.storage_pool_path)
    for vm in vms:  # never leave a bench domain, volume or console log behind
        hv.undefine_domain(vm.vm_id)
        hv.delete_volume(pool, vm.volume)
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{settings.console_log_dir}/{vm.vm_id}.log")


def idle_probe(api: str, location: str, count: int = 50) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        http.get(f"{api}{location}", timeout=10)
        samples.append((time.perf_counter() - start) * 1000)
        time.sleep(0.02)
    return samples


@click.command()
@click.option("--api", default=default_api, show_default="http://$IAAS_API_BIND")
@click.option("--image", default="tiny", show_default=True)
@click.option("--size", default=20, show_default=True, type=click.IntRange(1, 100), help="Creates per burst.")
@click.option("--threads", default=None, type=int, help="Raw threads [default: IAAS_WORKER_CONCURRENCY].")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option("--poll-interval", default=0.05, show_default=True, help="Each client's poll interval (s).")
@click.option("--probe-interval", default=0.02, show_default=True, help="Pause between probe GETs (s).")
@click.option(
    "--long-poll", default=0.0, show_default=True, type=click.FloatRange(0, 60),
    help="Clients long-poll (GET …?wait=S) instead of polling every --poll-interval; 0: poll.",
)  # fmt: skip
def main(
    api: str,
    image: str,
    size: int,
    threads: int | None,
    repeats: int,
    poll_interval: float,
    probe_interval: float,
    long_poll: float,
) -> None:
    settings = Settings()
    authorize(settings)
    threads = threads or settings.worker_concurrency
    hv = Hypervisor(settings.libvirt_uri)
    pool = hv.ensure_pool(settings.storage_pool, settings.storage_pool_path)
    image_path = pool.storageVolLookupByName(libvirt_xml.image_volume_name(image)).path()

    # idle reference for the probe: one task that exists, read while nothing else runs
    warm = api_burst(api, image, 1, poll_interval, probe_interval, long_poll)
    delete_through_api(api, warm.vm_ids)
    reference = warm.locations[0]  # any task reads alike: the warm-up's, which stays after its delete

    api_runs: list[ApiBurst] = []
    raw_runs: list[RawBurst] = []
    idle_ms: list[float] = []
    for i in range(repeats):
        order = ("api", "raw") if i % 2 == 0 else ("raw", "api")
        for which in order:
            if which == "api":
                run = api_burst(api, image, size, poll_interval, probe_interval, long_poll)
                try:
                    if run.failures:
                        raise click.ClickException(f"creates failed: {run.failures}")
                    api_runs.append(run)
                finally:
                    delete_through_api(api, run.vm_ids)
                click.echo(
                    f"repeat {i + 1}/{repeats} api: {run.wall_s:.2f} s (server {run.server_s:.2f} s), "
                    f"{run.polls} polls, probe p50 {percentile(run.probe_ms, 50):.1f} ms "
                    f"p99 {percentile(run.probe_ms, 99):.1f} ms (n={len(run.probe_ms)})",
                    err=True,
                )
            else:
                raw_run = raw_burst(hv, settings, image_path, size, threads)
                raw_teardown(hv, settings, raw_run.vms)
                raw_runs.append(raw_run)
                click.echo(f"repeat {i + 1}/{repeats} raw: {raw_run.wall_s:.2f} s", err=True)
        idle_ms += idle_probe(api, reference, 20)  # the probe's idle reference, between bursts

    api_wall = median([r.wall_s for r in api_runs])
    api_server = median([r.server_s for r in api_runs])
    raw = median([r.wall_s for r in raw_runs])
    api_run = median([x for r in api_runs for x in r.run_s])
    raw_build = median([x for r in raw_runs for x in r.build_s])
    api_start = median([x for r in api_runs for x in r.start_s])
    raw_start = median([x for r in raw_runs for x in r.start_s])
    burst_probe = [ms for r in api_runs for ms in r.probe_ms]
    click.echo(
        f"\nburst of {size} creates, median of {repeats}; raw libvirt with {threads} threads; "
        + (
            f"clients long-poll (wait={long_poll:g} s)"
            if long_poll
            else f"clients poll every {poll_interval * 1000:.0f} ms"
        )
    )
    click.echo(
        table(
            ["measure", "value", "raw libvirt", "ratio"],
            [
                ["API burst, wall to last success seen (s)", api_wall, raw, api_wall / raw],
                ["API burst, wall to last finished_at (s)", api_server, raw, api_server / raw],
                [
                    "API/raw wall, median of per-repeat ratios",
                    "",
                    "",
                    median([a.wall_s / r.wall_s for a, r in zip(api_runs, raw_runs, strict=True)]),
                ],
                [
                    "per create: claim -> finished vs raw build (s, median)",
                    api_run,
                    raw_build,
                    api_run / raw_build,
                ],
                [
                    "per create: start_domain step vs raw create() (s, median)",
                    api_start,
                    raw_start,
                    api_start / raw_start,
                ],
                ["GETs by the pollers per burst", median([float(r.polls) for r in api_runs]), "", ""],
            ],
        )
    )
    click.echo(
        table(
            ["GET /v1/tasks/<id> (ms)", "p50", "p99", "n"],
            [
                ["idle", percentile(idle_ms, 50), percentile(idle_ms, 99), len(idle_ms)],
                [
                    "during the burst",
                    percentile(burst_probe, 50),
                    percentile(burst_probe, 99),
                    len(burst_probe),
                ],
            ],
        )
    )
    components = sorted({k for r in [*api_runs, *raw_runs] for k in r.cpu_s})
    click.echo(
        table(
            ["CPU seconds during the burst (median)", "API burst", "raw burst"],
            [
                [
                    c,
                    median([r.cpu_s.get(c, 0.0) for r in api_runs]),
                    median([r.cpu_s.get(c, 0.0) for r in raw_runs]),
                ]
                for c in components
            ],
        )
    )
    click.echo(
        f"targets: burst ratio <= 1.15: {'met' if api_wall / raw <= 1.15 else 'NOT met'}; "
        f"GET p50 <= 5 ms during the burst: {'met' if percentile(burst_probe, 50) <= 5 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
