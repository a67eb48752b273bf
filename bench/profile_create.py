"""Where the time of one create goes, two ways, without changing product code.

    .venv/bin/python -m bench.profile_create --rounds 5 --live 5

In-process (--rounds): a create is accepted (Flask test client) for image `bench-noworker` (host
`bench-noworker`: no worker reads its queue), then its saga is run here by the worker's own code,
`worker.task_runner.run_vm_task`, with every phase timed from outside (wrappers installed in this
process only): claim, load, each step's journal writes (`started`, `mark`: each one transaction opened
by `SELECT ... FOR SHARE` on the task), the step itself split into libvirt and database time, the
thread `call_bounded` spawns, finish. Database transactions and statements are counted per create.
The same libvirt work done directly (createXML, defineXML, create) runs in the same rounds.

Live (--live): creates of image `tiny` through the running stack's API and worker, the client polling
every 5 ms as bench/create_latency.py does; the task's own timestamps split the wall time into accept,
Celery delivery (queued_at -> started_at, the claim's clock), the claim/load before the first step,
the steps, the gaps between them (journal writes), finish, and the client's poll.

VMs are deleted afterwards (in-process ones by running their destroy saga here, live ones through
the API)."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
import psycopg2
import redis
import requests
import worker.saga as saga
import worker.task_runner as task_runner
import worker.vm_sagas as vm_sagas
from worker.journal import DbJournal

from api import create_app
from bench import profile_accept
from bench.util import NO_WORKER_HOST, default_api, ensure_no_worker_image, median, table
from common.config import get_settings
from common.queue import host_queue
from common.states import TaskKind
from worker import libvirt_xml, runtime
from worker.hypervisor import Hypervisor

GIB = 1024**3
# (phase, step) -> seconds, for the current create
SAMPLES: dict[tuple[str, str], float] = defaultdict(float)
CALLS: Counter[tuple[str, str]] = Counter()
_local = threading.local()
_current_step = ["(before steps)"]


def _record(phase: str, seconds: float) -> None:
    SAMPLES[(phase, _current_step[0])] += seconds
    CALLS[(phase, _current_step[0])] += 1


def timed(phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_local, "depth", 0)
        _local.depth = depth + 1
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _local.depth = depth
            if depth == 0:  # only the outermost timed call counts (libvirt calls nest)
                _record(phase, time.perf_counter() - start)

    return wrapper


def instrument() -> None:
    """Wrap the worker's phases. Everything here is looked up at call time, so wrapping the module
    attribute (or class attribute) is enough."""
    task_runner.claim = timed("claim (UPDATE ... RETURNING, 1 txn)", task_runner.claim)  # type: ignore[assignment]
    task_runner.load_context = timed("load context (3 SELECTs)", task_runner.load_context)  # type: ignore[assignment]
    task_runner.finish = timed("finish (UPDATE, 1 txn)", task_runner.finish)  # type: ignore[assignment]
    heartbeat = task_runner.heartbeat

    @contextmanager
    def timed_heartbeat(*args: Any, **kwargs: Any) -> Iterator[None]:
        start = time.perf_counter()
        with heartbeat(*args, **kwargs):
            _record("heartbeat thread start", time.perf_counter() - start)
            yield
        _current_step[0] = "(after steps)"

    task_runner.heartbeat = timed_heartbeat  # type: ignore[assignment]
    DbJournal.load = timed("journal.load (FOR SHARE + SELECT, 1 txn)", DbJournal.load)  # type: ignore[method-assign]
    started = timed("journal.started (FOR SHARE + INSERT, 1 txn)", DbJournal.started)

    def started_step(self: DbJournal, seq: int, name: str, *args: Any) -> int:
        _current_step[0] = f"{seq} {name}"
        return started(self, seq, name, *args)  # type: ignore[no-any-return]

    DbJournal.started = started_step  # type: ignore[method-assign]
    DbJournal.mark = timed("journal.mark (FOR SHARE + UPDATE, 1 txn)", DbJournal.mark)  # type: ignore[method-assign]
    vm_sagas.move_vm = timed("step: database (move_vm, 1 txn)", vm_sagas.move_vm)  # type: ignore[assignment]
    for name in ("ensure_pool", "find_volume", "create_overlay_volume", "define_domain", "start_domain",
                 "find_domain"):  # fmt: skip
        label = "step: libvirt (pool lookup)" if name == "ensure_pool" else "step: libvirt"
        setattr(Hypervisor, name, timed(label, getattr(Hypervisor, name)))
    bounded = saga.bounded

    def timed_bounded(fn: Callable[[Any], object], ctx: Any, timeout: float, what: str) -> None:
        inner: list[float] = []

        def run(c: Any) -> object:
            start = time.perf_counter()
            try:
                return fn(c)
            finally:
                inner.append(time.perf_counter() - start)

        start = time.perf_counter()
        try:
            bounded(run, ctx, timeout, what)
        finally:
            _record("call_bounded: thread spawn + hand-off", time.perf_counter() - start - sum(inner))

    saga.bounded = timed_bounded


def raw_create(
    hv: Hypervisor, pool: Any, image_path: str, domain_type: str, log_dir: str
) -> tuple[float, Any]:
    vm_id = uuid.uuid4()
    volume = f"bench-raw-{vm_id}.qcow2"
    start = time.perf_counter()
    path = pool.createXML(libvirt_xml.overlay_volume_xml(volume, GIB, image_path, "qcow2"), 0).path()
    spec = libvirt_xml.DomainSpec(vm_id, f"bench-raw-{vm_id.hex[:6]}", "tiny", 1, 128, path,
                                  f"{log_dir}/{vm_id}.log", domain_type)  # fmt: skip
    hv.conn.defineXML(libvirt_xml.domain_xml(spec)).create()
    seconds = time.perf_counter() - start
    hv.undefine_domain(vm_id)
    hv.delete_volume(pool, volume)
    with contextlib.suppress(FileNotFoundError):
        os.remove(f"{log_dir}/{vm_id}.log")
    return seconds, vm_id


def in_process(rounds: int) -> None:
    settings = get_settings()
    sessions = runtime.sessions()
    image = ensure_no_worker_image(sessions)
    app = create_app(settings)
    client = app.test_client()
    profile_accept.count_sql(runtime.engine())
    hv = runtime.hypervisor()
    pool = hv.ensure_pool(settings.storage_pool, settings.storage_pool_path)
    image_path = pool.storageVolLookupByName(libvirt_xml.image_volume_name("tiny")).path()
    domain_type = libvirt_xml.resolve_domain_type(settings.domain_type, settings.libvirt_uri)
    raw_create(hv, pool, image_path, domain_type, settings.console_log_dir)  # warm-up: connection, pool
    real_run = task_runner.run_vm_task
    instrument()
    per_round: list[dict[tuple[str, str], float]] = []
    totals, raws, commits, statements = [], [], [], []
    for i in range(rounds):
        body = {"name": f"prof-{uuid.uuid4().hex[:8]}", "image": image, "vcpus": 1, "memory_mib": 128,
                "disk_gib": 1}  # fmt: skip
        created = client.post("/v1/vms", json=body)
        assert created.status_code == 202, created.get_data(as_text=True)
        task_id, vm_id = uuid.UUID(created.json["task"]["id"]), created.json["vm"]["id"]  # type: ignore[index]
        SAMPLES.clear()
        CALLS.clear()
        profile_accept.COUNTS.clear()
        _current_step[0] = "(before steps)"
        start = time.perf_counter()
        real_run(task_id, TaskKind.CREATE_VM, vm_sagas.CREATE_STEPS)
        totals.append(time.perf_counter() - start)
        per_round.append(dict(SAMPLES))
        commits.append(profile_accept.COUNTS["db: COMMIT"])
        statements.append(sum(v for k, v in profile_accept.COUNTS.items() if k.startswith("db: ")))
        deleted = client.delete(f"/v1/vms/{vm_id}")
        assert deleted.status_code == 202, deleted.get_data(as_text=True)
        real_run(uuid.UUID(deleted.json["task"]["id"]), TaskKind.DESTROY_VM, vm_sagas.DESTROY_STEPS)  # type: ignore[index]
        # the raw create after the saga's guest is gone: a booting guest would slow it down
        raw_s, _ = raw_create(hv, pool, image_path, domain_type, settings.console_log_dir)
        raws.append(raw_s)
        click.echo(
            f"round {i + 1}/{rounds}: saga {totals[-1] * 1000:.0f} ms, raw {raw_s * 1000:.0f} ms", err=True
        )
    _report_in_process(per_round, totals, raws, commits, statements)
    profile_accept.TRACE.clear()


def _report_in_process(
    per_round: list[dict[tuple[str, str], float]],
    totals: list[float],
    raws: list[float],
    commits: list[int],
    statements: list[int],
) -> None:
    keys = sorted({k for r in per_round for k in r}, key=lambda k: (k[1], k[0]))
    rows = []
    for key in keys:
        rows.append([key[1], key[0], median([r.get(key, 0.0) for r in per_round]) * 1000])
    accounted = median([sum(r.values()) for r in per_round]) * 1000
    total, raw = median(totals) * 1000, median(raws) * 1000
    libvirt = [sum(v for k, v in r.items() if k[0].startswith("step: libvirt")) for r in per_round]
    overhead = median([t - lv for t, lv in zip(totals, libvirt, strict=True)]) * 1000
    rows.append(["", "unaccounted (Python between phases)", total - accounted])
    rows.append(["", "TOTAL run_vm_task (median)", total])
    rows.append(["", "of which not libvirt: the control plane (median of total - libvirt)", overhead])
    rows.append(["", "raw libvirt, same calls done directly (median)", raw])
    click.echo(f"\nin-process create saga, median of {len(totals)} rounds (ms)")
    click.echo(table(["step", "phase", "ms"], rows))
    by_phase: dict[str, float] = defaultdict(float)
    for key in keys:
        by_phase[key[0]] += median([r.get(key, 0.0) for r in per_round]) * 1000
    click.echo(
        table(
            ["phase (all steps)", "ms", "% of saga"], [[p, v, v / total * 100] for p, v in by_phase.items()]
        )
    )
    click.echo(
        f"saga/raw {total / raw:.2f}; per create: {median([float(c) for c in commits]):.0f} transactions "
        f"(COMMITs), {median([float(s) for s in statements]):.0f} database round trips (pings, BEGINs, "
        "statements, COMMITs)"
    )


def _ts(value: str | None) -> float:
    assert value is not None
    return datetime.fromisoformat(value).timestamp()


def live(api: str, rounds: int, poll_s: float) -> None:
    parts: dict[str, list[float]] = defaultdict(list)
    for i in range(rounds):
        body = {"name": f"live-{uuid.uuid4().hex[:8]}", "image": "tiny", "vcpus": 1, "memory_mib": 128,
                "disk_gib": 1}  # fmt: skip
        t_post = time.time()
        created = requests.post(f"{api}/v1/vms", json=body, timeout=10)
        t_202 = time.time()
        created.raise_for_status()
        location = created.headers["Location"]
        while True:
            task = requests.get(f"{api}{location}", timeout=10).json()
            if task["status"] in ("succeeded", "failed"):
                t_seen = time.time()
                break
            time.sleep(poll_s)
        assert task["status"] == "succeeded", task["error"]
        steps = task["steps"]
        parts["client: POST -> 202"].append(t_202 - t_post)
        parts["API: POST -> queued_at (accept incl. publish)"].append(_ts(task["queued_at"]) - t_post)
        parts["Celery delivery: queued_at -> claim (started_at)"].append(
            _ts(task["started_at"]) - _ts(task["queued_at"])
        )
        parts["worker: claim -> first step's journal row"].append(
            _ts(steps[0]["started_at"]) - _ts(task["started_at"])
        )
        for j, step in enumerate(steps):
            parts[f"step {step['name']} (journal started -> finished)"].append(
                _ts(step["finished_at"]) - _ts(step["started_at"])
            )
            if j + 1 < len(steps):
                parts[f"gap after {step['name']} (journal writes)"].append(
                    _ts(steps[j + 1]["started_at"]) - _ts(step["finished_at"])
                )
        parts["worker: last step -> task finished_at"].append(
            _ts(task["finished_at"]) - _ts(steps[-1]["finished_at"])
        )
        parts["client: finished_at -> poll sees it"].append(t_seen - _ts(task["finished_at"]))
        parts["TOTAL POST -> succeeded seen"].append(t_seen - t_post)
        deleted = requests.delete(f"{api}/v1/vms/{task['vm_id']}", timeout=10)
        deleted.raise_for_status()
        while requests.get(f"{api}{deleted.headers['Location']}", timeout=10).json()["status"] not in (
            "succeeded",
            "failed",
        ):
            time.sleep(0.05)
        click.echo(f"live round {i + 1}/{rounds}: {(t_seen - t_post) * 1000:.0f} ms", err=True)
    click.echo(
        f"\nlive create through the stack, median of {rounds} (ms; client polls every {poll_s * 1000:.0f} ms)"
    )
    click.echo(
        table(
            ["segment", "median ms", "min ms"],
            [[k, median(v) * 1000, min(v) * 1000] for k, v in parts.items()],
        )
    )


def txn_micro(n: int) -> None:
    """What the worker's database writes cost here, on scratch tables of the bench's own: a round trip,
    a durable COMMIT, and the journal's write as today (BEGIN; SELECT ... FOR SHARE; UPDATE; COMMIT)
    against the same fence and write as one statement, and with synchronous_commit off."""
    url = get_settings().database_url.replace("postgresql+psycopg2://", "postgresql://")
    conn = psycopg2.connect(url)
    cur = conn.cursor()
    autocommit = psycopg2.connect(url)
    autocommit.autocommit = True
    auto = autocommit.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS bench_txn_task (id int PRIMARY KEY, status text, attempts int)")
    cur.execute("CREATE TABLE IF NOT EXISTS bench_txn_step (id int PRIMARY KEY, task_id int, status text)")
    cur.execute("INSERT INTO bench_txn_task VALUES (1, 'running', 1) ON CONFLICT DO NOTHING")
    cur.execute("INSERT INTO bench_txn_step VALUES (1, 1, 'running') ON CONFLICT DO NOTHING")
    conn.commit()
    fence = "SELECT id FROM bench_txn_task WHERE id = 1 AND attempts = 1 AND status = 'running'"

    def journal_today() -> None:
        cur.execute(fence + " FOR SHARE")
        assert cur.fetchone() is not None
        cur.execute("UPDATE bench_txn_step SET status = 'succeeded' WHERE id = 1")
        conn.commit()

    def journal_one_statement() -> None:
        cur.execute(
            "UPDATE bench_txn_step s SET status = 'succeeded' FROM (SELECT id FROM bench_txn_task "
            "WHERE id = 1 AND attempts = 1 AND status = 'running' FOR SHARE) t WHERE s.id = 1 RETURNING s.id"
        )
        assert cur.fetchone() is not None
        conn.commit()

    def share_only() -> None:
        cur.execute(fence + " FOR SHARE")
        conn.commit()

    def async_commit(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            cur.execute("SET LOCAL synchronous_commit = off")
            fn()

        return run

    def measure(fn: Callable[[], None]) -> list[float]:
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1000)
        return sorted(samples)

    variants: list[tuple[str, Callable[[], None]]] = [
        ("one round trip: SELECT 1 (autocommit)", lambda: auto.execute("SELECT 1")),
        ("read-only txn: BEGIN; SELECT; COMMIT", lambda: (cur.execute(fence), conn.commit())),
        ("FOR SHARE only: BEGIN; SELECT ... FOR SHARE; COMMIT", share_only),
        ("journal write today: BEGIN; FOR SHARE; UPDATE; COMMIT", journal_today),
        ("journal write as one UPDATE ... FROM (... FOR SHARE)", journal_one_statement),
        ("journal write today, synchronous_commit off", async_commit(journal_today)),
    ]
    rows = []
    for label, fn in variants:
        measure(fn)  # warm-up
        samples = measure(fn)
        rows.append([label, samples[len(samples) // 2], samples[int(len(samples) * 0.99) - 1]])
    cur.execute("DROP TABLE bench_txn_step, bench_txn_task")
    conn.commit()
    conn.close()
    autocommit.close()
    click.echo(f"\ndatabase writes, {n} each (psycopg2, this machine, now)")
    click.echo(table(["operation", "median ms", "p99 ms"], rows))


@click.command()
@click.option(
    "--rounds", default=5, show_default=True, type=click.IntRange(0, 100), help="In-process rounds."
)
@click.option("--live", "live_rounds", default=5, show_default=True, type=click.IntRange(0, 100))
@click.option("--api", default=default_api, show_default="http://$IAAS_API_BIND")
@click.option("--poll", default=0.005, show_default=True, help="Live: the client's poll interval (s).")
@click.option("--txn", default=300, show_default=True, help="Database write micro-benchmark repetitions.")
def main(rounds: int, live_rounds: int, api: str, poll: float, txn: int) -> None:
    if txn:
        txn_micro(txn)
    if rounds:
        try:
            in_process(rounds)
        finally:
            redis.Redis.from_url(get_settings().broker_url).delete(host_queue(NO_WORKER_HOST))
    if live_rounds:
        live(api, live_rounds, poll)


if __name__ == "__main__":
    main()
