"""Where the time of one create goes, two ways, without changing product code.

    .venv/bin/python -m bench.profile_create --rounds 5 --live 5

In-process (--rounds): a create is accepted (Flask test client) for image `bench-noworker` (host
`bench-noworker`: no worker reads its queue), then its saga is run here by the worker's own code,
`worker.sagas.runner.run_vm_task` with `worker.sagas.create.CREATE_STEPS`, with every phase timed from
outside (wrappers installed in this process only): the claim (`common.lifecycle.claim`), loading the
context, the journal's writes (`DbJournal.started`: one fenced transaction that also carries the
previous step's deferred `succeeded` mark; `DbJournal.mark`: a `succeeded` mark only waits for the
next write; `DbJournal.flush`: the last step's mark, after the steps), each step split into libvirt
and database time (`move_vm`: one transaction through `common.lifecycle`), the thread
`call_bounded` spawns for each step, and finish. Database transactions (BEGINs), COMMITs and round
trips are counted per create (see bench/profile_accept.py for how). The same libvirt work done
directly (createXML, defineXML, create) runs in the same rounds.

Live (--live): creates of image `tiny` through the running stack's API and worker, the client polling
every 5 ms as bench/create_latency.py does; the task's own timestamps split the wall time into accept,
Celery delivery (queued_at -> started_at, the claim's clock), the claim and loads before the first
step's journal row, each step, the gaps between steps, finish, and the client's poll. A step's
`started_at` is PostgreSQL's `now()` in the transaction that writes its row, and its `finished_at` is
taken by the worker when the next write begins (its `succeeded` mark is deferred to that write), so
a step's span holds the commit of its own `started` write (with the previous step's mark), the
thread hand-off and the step itself, and a gap holds the next write's connection checkout, pre-ping
and BEGIN.

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

import worker.sagas.create as create_saga
import worker.sagas.engine as saga_engine
import worker.sagas.runner as runner
from api import create_app
from bench import profile_accept
from bench.util import (
    NO_WORKER_HOST,
    authorize,
    authorized_client,
    default_api,
    ensure_no_worker_image,
    http,
    median,
    table,
)
from common.config import get_settings
from common.queue import host_queue
from common.states import TaskKind
from worker import resources
from worker.hypervisor import domain_xml as libvirt_xml
from worker.hypervisor.connection import Hypervisor
from worker.sagas.destroy import DESTROY_STEPS
from worker.sagas.engine import StepRecord, UndoData
from worker.sagas.journal import DbJournal

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
    """Wrap the worker's phases. Everything here is looked up at call time (module globals of
    worker.sagas.runner, worker.sagas.create and worker.sagas.engine, class attributes), so
    replacing the attribute is enough."""
    runner.claim = timed("claim (lifecycle.claim: UPDATE ... RETURNING, 1 txn)", runner.claim)
    runner.load_context = timed(
        "load context (VM, task + its steps by selectin, image: 1 txn)", runner.load_context
    )
    runner.finish = timed("finish (lifecycle.finish: UPDATE, 1 txn)", runner.finish)
    heartbeat = runner.heartbeat

    @contextmanager
    def timed_heartbeat(*args: Any, **kwargs: Any) -> Iterator[None]:
        start = time.perf_counter()
        with heartbeat(*args, **kwargs):
            _record("heartbeat thread start", time.perf_counter() - start)
            yield
        _current_step[0] = "(after steps)"

    runner.heartbeat = timed_heartbeat
    DbJournal.load = timed("journal.load (fence SELECT + steps SELECT, 1 txn, no lock)", DbJournal.load)  # type: ignore[method-assign]
    started = timed("journal.started (previous step's mark + fenced INSERT, 1 txn)", DbJournal.started)

    def started_step(
        self: DbJournal, seq: int, name: str, undo_data: UndoData, existing: StepRecord | None
    ) -> int:
        _current_step[0] = f"{seq} {name}"
        return started(self, seq, name, undo_data, existing)

    DbJournal.started = started_step  # type: ignore[method-assign]
    DbJournal.mark = timed("journal.mark (succeeded: deferred to the next write)", DbJournal.mark)  # type: ignore[method-assign]
    flush = timed("journal.flush (last step's mark: fenced UPDATE, 1 txn)", DbJournal.flush)

    def flush_after_steps(self: DbJournal) -> None:
        if getattr(_local, "depth", 0) == 0:  # the run's own flush, not one inside mark()
            _current_step[0] = "(after steps)"
        flush(self)

    DbJournal.flush = flush_after_steps  # type: ignore[method-assign]
    create_saga.move_vm = timed("step: database (move_vm, 1 txn)", create_saga.move_vm)
    for name in ("pool", "ensure_pool", "find_volume", "create_overlay_volume", "define_domain",
                 "start_domain", "find_domain"):  # fmt: skip
        label = "step: libvirt (pool handle)" if name in ("pool", "ensure_pool") else "step: libvirt"
        setattr(Hypervisor, name, timed(label, getattr(Hypervisor, name)))
    bounded = saga_engine.bounded

    def timed_bounded(fn: Callable[..., object], timeout: float, what: str, *args: Any) -> None:
        inner: list[float] = []

        def run(*a: Any) -> object:
            start = time.perf_counter()
            try:
                return fn(*a)
            finally:
                inner.append(time.perf_counter() - start)

        start = time.perf_counter()
        try:
            bounded(run, timeout, what, *args)
        finally:
            _record("call_bounded: thread spawn + hand-off", time.perf_counter() - start - sum(inner))

    saga_engine.bounded = timed_bounded


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
    sessions = resources.sessions()
    image = ensure_no_worker_image(sessions)
    app = create_app(settings)
    client = authorized_client(app)
    profile_accept.count_sql(resources.engine())
    hv = resources.hypervisor()
    pool = hv.pool(settings)  # the handle the saga's steps use, cached as in a running worker
    image_path = pool.storageVolLookupByName(libvirt_xml.image_volume_name("tiny")).path()
    domain_type = libvirt_xml.resolve_domain_type(settings.domain_type, settings.libvirt_uri)
    raw_create(hv, pool, image_path, domain_type, settings.console_log_dir)  # warm-up: connection, pool
    real_run = runner.run_vm_task
    instrument()
    per_round: list[dict[tuple[str, str], float]] = []
    totals, raws = [], []
    counts: list[Counter[str]] = []
    for i in range(rounds):
        body = {"name": f"prof-{uuid.uuid4().hex[:8]}", "image": image, "vcpus": 1, "memory_mib": 128,
                "disk_gib": 1}  # fmt: skip
        created = client.post("/v1/vms", json=body)
        assert created.status_code == 202, created.get_data(as_text=True)
        task_id, vm_id = uuid.UUID(created.json["task"]["id"]), created.json["vm"]["id"]  # type: ignore[index]
        SAMPLES.clear()
        CALLS.clear()
        profile_accept.COUNTS.clear()
        profile_accept.TRACE.clear()
        _current_step[0] = "(before steps)"
        start = time.perf_counter()
        real_run(task_id, TaskKind.CREATE_VM, create_saga.CREATE_STEPS)
        totals.append(time.perf_counter() - start)
        per_round.append(dict(SAMPLES))
        counts.append(profile_accept.COUNTS.copy())
        trace = list(profile_accept.TRACE)
        deleted = client.delete(f"/v1/vms/{vm_id}")
        assert deleted.status_code == 202, deleted.get_data(as_text=True)
        real_run(uuid.UUID(deleted.json["task"]["id"]), TaskKind.DESTROY_VM, DESTROY_STEPS)  # type: ignore[index]
        # the raw create after the saga's guest is gone: a booting guest would slow it down
        raw_s, _ = raw_create(hv, pool, image_path, domain_type, settings.console_log_dir)
        raws.append(raw_s)
        click.echo(
            f"round {i + 1}/{rounds}: saga {totals[-1] * 1000:.0f} ms, raw {raw_s * 1000:.0f} ms", err=True
        )
    _report_in_process(per_round, totals, raws, counts, trace)
    profile_accept.TRACE.clear()


def _report_in_process(
    per_round: list[dict[tuple[str, str], float]],
    totals: list[float],
    raws: list[float],
    counts: list[Counter[str]],
    trace: list[str],
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

    def per_create(key: str) -> float:
        return median([float(c[key]) for c in counts])

    round_trips = median([float(sum(v for k, v in c.items() if k.startswith("db: "))) for c in counts])
    transactions, commits, rollbacks = (per_create(f"db: {k}") for k in ("BEGIN", "COMMIT", "ROLLBACK"))
    click.echo(
        f"saga/raw {total / raw:.2f}; per create (the worker's engine): {transactions:.0f} transactions, "
        f"of which {commits:.0f} committed and {rollbacks:.0f} rolled back (reads); {round_trips:.0f} "
        "database round trips (pre-pings, BEGINs, statements, COMMITs, ROLLBACKs)"
    )
    click.echo(table(["per create (median)", "count"], [[k, per_create(k)] for k in sorted(counts[-1])]))
    click.echo("the last create's database traffic, in order:\n  " + "\n  ".join(trace))


def _ts(value: str | None) -> float:
    assert value is not None
    return datetime.fromisoformat(value).timestamp()


def live(api: str, rounds: int, poll_s: float) -> None:
    parts: dict[str, list[float]] = defaultdict(list)
    for i in range(rounds):
        name = f"live-{uuid.uuid4().hex[:8]}"
        body: dict[str, Any] = {"name": name, "image": "tiny", "vcpus": 1, "memory_mib": 128, "disk_gib": 1}
        t_post = time.time()
        created = http.post(f"{api}/v1/vms", json=body, timeout=10)
        t_202 = time.time()
        created.raise_for_status()
        location = created.headers["Location"]
        while True:
            task = http.get(f"{api}{location}", timeout=10).json()
            if task["status"] in ("succeeded", "failed"):
                t_seen = time.time()
                break
            time.sleep(poll_s)
        assert task["status"] == "succeeded", task["error"]
        steps = task["steps"]
        parts["client: POST -> 202"].append(t_202 - t_post)
        parts["API: POST -> queued_at (record, commit, publish)"].append(_ts(task["queued_at"]) - t_post)
        parts["Celery delivery: queued_at -> claim's transaction (started_at)"].append(
            _ts(task["started_at"]) - _ts(task["queued_at"])
        )
        parts["worker: claim -> first step's row (claim commit, load context, journal.load)"].append(
            _ts(steps[0]["started_at"]) - _ts(task["started_at"])
        )
        for j, step in enumerate(steps):
            parts[f"step {step['name']} (its row's transaction -> the next write)"].append(
                _ts(step["finished_at"]) - _ts(step["started_at"])
            )
            if j + 1 < len(steps):
                parts[f"gap after {step['name']} (next write's checkout, pre-ping, BEGIN)"].append(
                    _ts(steps[j + 1]["started_at"]) - _ts(step["finished_at"])
                )
        parts["worker: last step -> task finished_at (flush, then finish)"].append(
            _ts(task["finished_at"]) - _ts(steps[-1]["finished_at"])
        )
        parts["client: finished_at -> poll sees it"].append(t_seen - _ts(task["finished_at"]))
        parts["TOTAL POST -> succeeded seen"].append(t_seen - t_post)
        deleted = http.delete(f"{api}/v1/vms/{task['vm_id']}", timeout=10)
        deleted.raise_for_status()
        while http.get(f"{api}{deleted.headers['Location']}", timeout=10).json()["status"] not in (
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
    """What the worker's database writes cost here, on scratch tables of the bench's own, in the shapes
    DbJournal sends them: a round trip, a read-only transaction, a fenced write as one statement
    (BEGIN; UPDATE ... WHERE EXISTS (SELECT ... FOR SHARE); COMMIT: a mark or flush), a `started`
    write (the waiting mark and INSERT ... SELECT ... WHERE EXISTS (...) in one transaction), the
    earlier shape with a separate FOR SHARE round trip for comparison, and the fenced write with
    synchronous_commit off."""
    url = get_settings().database_url.replace("postgresql+psycopg2://", "postgresql://")
    conn = psycopg2.connect(url)
    cur = conn.cursor()
    autocommit = psycopg2.connect(url)
    autocommit.autocommit = True
    auto = autocommit.cursor()
    cur.execute("DROP TABLE IF EXISTS bench_txn_step, bench_txn_task")  # a crashed run's, if any
    cur.execute("CREATE TABLE bench_txn_task (id int PRIMARY KEY, status text, attempts int)")
    cur.execute("CREATE TABLE bench_txn_step (id serial PRIMARY KEY, task_id int, status text)")
    cur.execute("INSERT INTO bench_txn_task VALUES (1, 'running', 1)")
    cur.execute("INSERT INTO bench_txn_step (task_id, status) VALUES (1, 'running')")
    conn.commit()
    fence = "SELECT id FROM bench_txn_task WHERE id = 1 AND attempts = 1 AND status = 'running'"
    # the fence as DbJournal writes it: a locking sub-select in the write's own WHERE
    mark = (
        "UPDATE bench_txn_step SET status = 'succeeded' WHERE id = 1 AND EXISTS (SELECT id FROM "
        "bench_txn_task WHERE id = 1 AND attempts = 1 AND status = 'running' FOR SHARE) RETURNING id"
    )
    insert = (
        "INSERT INTO bench_txn_step (task_id, status) SELECT 1, 'running' WHERE EXISTS (SELECT id FROM "
        "bench_txn_task WHERE id = 1 AND attempts = 1 AND status = 'running' FOR SHARE) RETURNING id"
    )

    def read_only() -> None:
        cur.execute(fence)
        conn.commit()

    def fenced_write() -> None:  # DbJournal.mark (other than a plain succeeded) and flush
        cur.execute(mark)
        assert cur.fetchone() is not None
        conn.commit()

    def started_write() -> None:  # DbJournal.started of a step after the first
        cur.execute(mark)
        assert cur.fetchone() is not None
        cur.execute(insert)
        assert cur.fetchone() is not None
        conn.commit()

    def separate_fence() -> None:  # the journal's write before it became one statement
        cur.execute(fence + " FOR SHARE")
        assert cur.fetchone() is not None
        cur.execute("UPDATE bench_txn_step SET status = 'succeeded' WHERE id = 1")
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
        ("read-only txn: BEGIN; SELECT; COMMIT", read_only),
        ("fenced write: BEGIN; UPDATE ... WHERE EXISTS (... FOR SHARE); COMMIT", fenced_write),
        ("started write: BEGIN; fenced UPDATE; fenced INSERT ... SELECT; COMMIT", started_write),
        ("before: BEGIN; SELECT ... FOR SHARE; UPDATE; COMMIT", separate_fence),
        ("fenced write, synchronous_commit off", async_commit(fenced_write)),
    ]
    rows = []
    for label, fn in variants:
        measure(fn)  # warm-up
        samples = measure(fn)
        rows.append([label, samples[len(samples) // 2], samples[max(int(len(samples) * 0.99) - 1, 0)]])
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
        authorize(get_settings())
        live(api, live_rounds, poll)


if __name__ == "__main__":
    main()
