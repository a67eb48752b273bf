"""Where the time of one `POST /v1/vms` goes, in-process (Flask test client, no gunicorn, no HTTP):
database round trips and commits, Redis round trips, and wall time per phase, for the product's accept
path (`api.accept.accept`: record, one commit, then `common.dispatch.enqueue`) and for the baseline
(bench/baseline_app.py) side by side; then the same for `GET /v1/tasks/<id>`
(`api.task_reads.read_task`), and what publishing one message costs. Product code is not changed:
phases are timed by wrapping functions from outside, for the duration of this process only.

    .venv/bin/python -m bench.profile_accept --posts 300
    .venv/bin/python -m bench.profile_accept --posts 300 --cprofile 25   # plus cProfile's top 25

Uses the stack's database and broker (IAAS_DATABASE_URL, IAAS_BROKER_URL) and the no-worker image
(`bench-noworker`, registered if missing), so nothing is built; deletes its rows afterwards.

Database round trips are counted as PostgreSQL sees them with psycopg2, from the state of each DBAPI
connection: one per pool pre-ping (`SELECT 1` at checkout, on an engine that has one), one BEGIN when
a statement opens a transaction (psycopg2 sends it before the first statement), one per statement,
one per COMMIT or ROLLBACK of an open transaction (ending a connection that has none is free).
Connections of an autocommit engine (`common.db.make_autocommit_engine`: the API's
`runtime().autocommit`) send each statement alone, with no BEGIN, COMMIT or ROLLBACK: their lines say
`(autocommit)`, and each write among them commits by itself without waiting for the WAL flush
(`synchronous_commit=off`), so it is counted apart from the durable COMMITs. Redis round trips are
`send_packed_command` calls (a MULTI/EXEC pipeline is one)."""

from __future__ import annotations

import cProfile
import functools
import io
import pstats
import re
import secrets
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import redis.connection
from flask import Flask
from psycopg2.extensions import STATUS_READY
from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session

import api.accept as accept_path
import api.runtime as api_runtime
import api.views.tasks as tasks_view
import api.views.vms as vms_view
import common.dispatch as dispatch
import common.lifecycle as lifecycle
from api import create_app
from bench import baseline_app
from bench.accept_rate import cleanup
from bench.util import NO_WORKER_HOST, authorize, authorized_client, ensure_no_worker_image, table
from common.config import Settings
from common.db import make_engine, make_session_factory
from common.queue import host_queue

PHASES: dict[str, list[float]] = defaultdict(list)
COUNTS: Counter[str] = Counter()
TRACE: list[str] = []  # the database and Redis commands of the last request, in order
# COUNTS keys that are not round trips of their own (the autocommitted writes are counted twice: as
# statements, and here as commits)
NOT_ROUND_TRIPS = ("db: autocommitted writes (synchronous_commit=off)",)
_WRITES = ("INSERT", "UPDATE", "DELETE")


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            PHASES[name].append(time.perf_counter() - start)

    return wrapper


def _dbapi(conn: Connection) -> Any:
    return conn.connection.dbapi_connection


def _in_transaction(dbapi: Any) -> bool:
    """psycopg2 has sent BEGIN on this connection and not yet COMMIT or ROLLBACK."""
    return not dbapi.autocommit and dbapi.status != STATUS_READY


def db_round_trips() -> int:
    return sum(v for k, v in COUNTS.items() if k.startswith("db: ") and k not in NOT_ROUND_TRIPS)


def count_sql(engine: Engine) -> None:
    """Count, on `engine`, what psycopg2 sends to PostgreSQL (see the module's docstring)."""

    @event.listens_for(engine, "before_cursor_execute")
    def _stmt(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        dbapi = cursor.connection
        if not dbapi.autocommit and dbapi.status == STATUS_READY:  # psycopg2 sends BEGIN first
            COUNTS["db: BEGIN"] += 1
            TRACE.append("db   BEGIN")
        verb = statement.split(None, 1)[0].upper()
        mode = " (autocommit)" if dbapi.autocommit else ""
        COUNTS[f"db: {verb}{mode}"] += 1
        if dbapi.autocommit and verb in _WRITES:
            COUNTS[NOT_ROUND_TRIPS[0]] += 1
        TRACE.append(f"db   {' '.join(statement.split())[:150]}{mode}")

    @event.listens_for(engine, "commit")
    def _commit(conn: Connection) -> None:
        if _in_transaction(_dbapi(conn)):
            COUNTS["db: COMMIT"] += 1
            TRACE.append("db   COMMIT")

    @event.listens_for(engine, "rollback")
    def _rollback(conn: Connection) -> None:
        if _in_transaction(_dbapi(conn)):
            COUNTS["db: ROLLBACK"] += 1
            TRACE.append("db   ROLLBACK")

    ping = engine.dialect.do_ping

    def counted_ping(dbapi_connection: Any) -> bool:
        COUNTS["db: pre-ping SELECT 1"] += 1
        TRACE.append("db   SELECT 1 (pool pre-ping at checkout)")
        return ping(dbapi_connection)

    engine.dialect.do_ping = counted_ping  # type: ignore[method-assign]


@contextmanager
def count_redis() -> Iterator[None]:
    """Count what goes over the wire: one `send_packed_command` is one round trip (a pipeline's
    MULTI ... EXEC goes as one); the command names are read from the packed RESP bytes."""
    cls = redis.connection.AbstractConnection
    send = cls.send_packed_command

    def send_counted(self: Any, command: Any, check_health: bool = True) -> None:
        raw = b"".join(command) if isinstance(command, list | tuple) else bytes(command)
        names = [m.decode() for m in re.findall(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n", raw)]
        COUNTS["redis: round trips"] += 1
        for name in names:
            COUNTS[f"redis: {name.upper()}"] += 1
        TRACE.append("redis " + " ".join(n.upper() for n in names))
        return send(self, command, check_health)

    cls.send_packed_command = send_counted  # type: ignore[method-assign]
    try:
        yield
    finally:
        cls.send_packed_command = send  # type: ignore[method-assign]


def wrap(module: Any, name: str, label: str) -> None:
    """Time `module.name` (looked up at call time by its callers) under `label`. A name the product no
    longer has is reported and skipped: its phase would silently read as zero otherwise."""
    if hasattr(module, name):
        setattr(module, name, timed(label, getattr(module, name)))
    else:
        click.echo(f"note: {module.__name__}.{name} is gone; phase {label.strip()!r} not measured", err=True)


def instrument_product() -> None:
    """Time the phases of api.accept.accept for POST /v1/vms, and read_task for GET /v1/tasks/<id>, by
    wrapping what they call (module globals, Session methods). Must run before create_app: the
    request teardown is registered with the app by reference."""
    wrap(vms_view, "request_create", "request_create (image SELECT + 2 flushes)")
    wrap(vms_view, "vm_json", "presenters")
    wrap(accept_path, "task_json", "presenters")
    wrap(accept_path, "enqueue", "enqueue (total)")
    wrap(dispatch, "publish", "  publish: celery send_task")
    wrap(lifecycle, "mark_queued", "  mark_queued: queued_at UPDATE (autocommit: checkout + statement)")
    wrap(api_runtime, "_close_session", "request teardown (Session.close)")
    wrap(tasks_view, "read_task", "read_task (one SELECT, autocommit)")
    Session.commit = timed("Session.commit (the request's one commit)", Session.commit)  # type: ignore[method-assign]


def publish_micro(settings: Settings, n: int) -> None:
    """What one publish costs: Celery's send_task as the API is configured (no task-sent event) and
    with the sent event on (as before), against one redis-py LPUSH of a message of the same size, on
    the same Redis db."""
    from celery import Celery

    from common.queue import TASK_NAMES, make_celery
    from common.states import TaskKind

    queue = host_queue(NO_WORKER_HOST)
    as_api = make_celery(settings)
    with_event = make_celery(settings)
    with_event.conf.task_send_sent_event = True
    broker = redis.Redis.from_url(settings.broker_url)
    payload = "x" * 1300  # about the size of a Celery protocol-2 message for one create task

    def send(app: Celery) -> Callable[[], object]:
        return lambda: app.send_task(TASK_NAMES[TaskKind.CREATE_VM], args=[str(uuid.uuid4())], queue=queue)

    sent_event = as_api.conf.task_send_sent_event
    rows = []
    for label, fn in (
        (f"celery send_task as the API (task_send_sent_event {'on' if sent_event else 'off'})", send(as_api)),
        ("celery send_task with task_send_sent_event on", send(with_event)),
        ("redis-py LPUSH of a 1.3 kB message", lambda: broker.lpush(queue, payload)),
    ):
        for _ in range(20):
            fn()  # warm-up: connections, queue declaration
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1000)
        rows.append([label, statistics.median(samples), sorted(samples)[max(int(n * 0.99) - 1, 0)]])
    broker.delete(queue)
    click.echo(f"\npublishing one message, {n} times each")
    click.echo(table(["publish", "median ms", "p99 ms"], rows))


def profile_get(app: Flask, sessions: Any, n: int) -> None:
    """GET /v1/tasks/<id> as the clients poll it, on the latest task with steps (a create that ran)
    if there is one: per-GET time in-process and in read_task, database round trips, and cProfile's
    top functions by own time."""
    from sqlalchemy import select

    from common.models import Task, TaskStep

    with sessions() as session:
        task_id = session.scalar(
            select(Task.id)
            .join(TaskStep, TaskStep.task_id == Task.id)
            .order_by(Task.created_at.desc())
            .limit(1)
        )
    if task_id is None:
        click.echo("\nno task with steps yet: run a create first to profile GET /v1/tasks/<id>")
        return
    client = authorized_client(app)
    for _ in range(20):
        client.get(f"/v1/tasks/{task_id}")
    COUNTS.clear()
    PHASES.clear()
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(n):
        TRACE.clear()
        response = client.get(f"/v1/tasks/{task_id}")
        assert response.status_code == 200, response.get_data(as_text=True)
    profiler.disable()
    wall = time.perf_counter() - start
    steps = len(response.json["steps"])  # type: ignore[index]
    trips = ", ".join(
        t.split("(")[0].strip()[:40] + (" (autocommit)" if "autocommit" in t else "") for t in TRACE
    )
    click.echo(
        f"\nGET /v1/tasks/{task_id} ({steps} steps): {wall / n * 1000:.2f} ms per GET in-process "
        f"(under cProfile), {db_round_trips() / n:.0f} database round trips: {trips}"
    )
    rows = [[name, len(v) / n, sum(v) / n * 1000, sum(v) / wall * 100] for name, v in PHASES.items()]
    if rows:
        click.echo(table(["phase", "calls/GET", "ms/GET", "% of wall"], rows))
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    click.echo(out.getvalue())


def drive(app: Flask, image: str, prefix: str, n: int) -> float:
    client = authorized_client(app)
    start = time.perf_counter()
    for i in range(n):
        TRACE.clear()
        body = {"name": f"{prefix}-{i}", "image": image, "vcpus": 1, "memory_mib": 128, "disk_gib": 1}
        response = client.post("/v1/vms", json=body)
        assert response.status_code == 202, response.get_data(as_text=True)
    return time.perf_counter() - start


def report(label: str, n: int, wall: float) -> None:
    click.echo(f"\n{label}: {n} POSTs, {wall / n * 1000:.2f} ms per POST in-process")
    rows = [[name, len(v) / n, sum(v) / n * 1000, sum(v) / wall * 100] for name, v in PHASES.items()]
    if rows:
        click.echo(table(["phase", "calls/POST", "ms/POST", "% of wall"], rows))
    counts = [[k, v / n] for k, v in sorted(COUNTS.items())]
    counts.append(["db: round trips (the db lines above but the autocommitted writes)", db_round_trips() / n])
    click.echo(table(["per POST", "count"], counts))
    click.echo(
        f"per POST: {db_round_trips() / n:.1f} database round trips, {COUNTS['db: COMMIT'] / n:.1f} durable "
        f"commits, {COUNTS[NOT_ROUND_TRIPS[0]] / n:.1f} autocommitted writes (synchronous_commit=off), "
        f"{COUNTS['redis: round trips'] / n:.1f} Redis round trips"
    )
    click.echo("the last POST, in order:\n  " + "\n  ".join(TRACE))


@click.command()
@click.option("--posts", default=300, show_default=True, type=click.IntRange(10, 100000))
@click.option("--cprofile", default=0, show_default=True, help="Also print cProfile's top N (product).")
@click.option(
    "--publish", default=500, show_default=True, help="Publishes per variant in the micro-benchmark."
)
@click.option("--gets", default=300, show_default=True, help="GET /v1/tasks/<id> to profile (0: none).")
def main(posts: int, cprofile: int, publish: int, gets: int) -> None:
    settings = Settings()
    authorize(settings)  # the bench token, before the baseline app (which has no settings) is driven
    sessions = make_session_factory(make_engine(settings.database_url))
    image = ensure_no_worker_image(sessions)
    prefixes = [f"p{secrets.token_hex(3)}", f"q{secrets.token_hex(3)}"]
    try:
        with count_redis():
            # the baseline, same counters
            base = baseline_app.create_app()
            count_sql(_engine_of(base))
            drive(base, image, prefixes[0], 20)  # warm-up
            PHASES.clear()
            COUNTS.clear()
            wall = drive(base, image, prefixes[0] + "x", posts)
            report("baseline (bench/baseline_app.py)", posts, wall)

            instrument_product()
            app = create_app(settings)
            count_sql(app.extensions["iaas"].engine)
            count_sql(app.extensions["iaas"].autocommit)
            drive(app, image, prefixes[1] + "w", 20)  # warm-up: pools, compiled statement caches
            PHASES.clear()
            COUNTS.clear()
            profiler = cProfile.Profile() if cprofile else None
            if profiler:
                profiler.enable()
            wall = drive(app, image, prefixes[1], posts)
            if profiler:
                profiler.disable()
            report("product (POST /v1/vms)", posts, wall)
            if profiler:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(cprofile)
                click.echo(out.getvalue())
            if gets:
                profile_get(app, sessions, gets)
        if publish:
            publish_micro(settings, publish)
    finally:
        cleanup(
            settings, sessions, [*prefixes, prefixes[0] + "x", prefixes[1] + "w"], host_queue(NO_WORKER_HOST)
        )


def _engine_of(app: Flask) -> Engine:
    """The baseline keeps its engine in the view's closure; find it there."""
    view = app.view_functions["accept"]
    for cell in view.__closure__ or ():
        if isinstance(cell.cell_contents, Engine):
            return cell.cell_contents
    raise LookupError("no engine in the baseline's view")


if __name__ == "__main__":
    main()
