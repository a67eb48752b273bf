"""Where the time of one `POST /v1/vms` goes, in-process (Flask test client, no gunicorn, no HTTP):
database round trips and commits, Redis round trips, and wall time per phase, for the product's view
and for the baseline (bench/baseline_app.py) side by side. Product code is not changed: phases are
timed by wrapping functions from outside for the duration of this process only.

    .venv/bin/python -m bench.profile_accept --posts 300
    .venv/bin/python -m bench.profile_accept --posts 300 --cprofile 25   # plus cProfile's top 25

Uses the stack's database and broker (IAAS_DATABASE_URL, IAAS_BROKER_URL) and the no-worker image
(`bench-noworker`, registered if missing), so nothing is built; deletes its rows afterwards.

Database round trips are counted as PostgreSQL sees them with psycopg2: one per pool pre-ping
(`SELECT 1` at every checkout), one BEGIN per transaction (psycopg2 sends it before the first
statement), one per statement, one per COMMIT (a rollback of a connection with no open transaction is
free). Redis round trips are `send_packed_command` calls (a MULTI/EXEC pipeline is one)."""

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
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

import api.views.vms as vms_view
import common.dispatch as dispatch
from api import create_app
from bench import baseline_app
from bench.accept_rate import cleanup
from bench.util import NO_WORKER_HOST, ensure_no_worker_image, table
from common.config import Settings
from common.db import make_engine, make_session_factory
from common.queue import host_queue

PHASES: dict[str, list[float]] = defaultdict(list)
COUNTS: Counter[str] = Counter()
TRACE: list[str] = []  # the database and Redis commands of the last POST, in order


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            PHASES[name].append(time.perf_counter() - start)

    return wrapper


def count_sql(engine: Engine) -> None:
    @event.listens_for(engine, "begin")
    def _begin(_conn: Any) -> None:
        COUNTS["db: BEGIN"] += 1
        TRACE.append("db   BEGIN")

    @event.listens_for(engine, "commit")
    def _commit(_conn: Any) -> None:
        COUNTS["db: COMMIT"] += 1
        TRACE.append("db   COMMIT")

    @event.listens_for(engine, "rollback")
    def _rollback(_conn: Any) -> None:
        COUNTS["db: ROLLBACK (pool reset / teardown)"] += 1
        TRACE.append("db   ROLLBACK")

    @event.listens_for(engine, "before_cursor_execute")
    def _stmt(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        COUNTS[f"db: {statement.split(None, 1)[0].upper()}"] += 1
        TRACE.append("db   " + " ".join(statement.split())[:150])

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


def instrument_product() -> None:
    """Time the phases of vms._accept by wrapping what it calls (module globals and Session methods).
    Names the view no longer uses are skipped: the product's code is allowed to move."""

    def wrap(module: Any, name: str, label: str) -> None:
        if hasattr(module, name):
            setattr(module, name, timed(label, getattr(module, name)))

    wrap(vms_view, "request_create", "request_create (image lookup + 2 flushes)")
    wrap(vms_view, "vm_json", "presenters")
    wrap(vms_view, "task_json", "presenters")
    wrap(vms_view, "publish_and_mark", "publish_and_mark (total)")
    wrap(vms_view, "publish", "  publish: celery send_task")  # when the view publishes itself
    wrap(dispatch, "publish", "  publish: celery send_task")
    dispatch.transaction = timed_cm("  mark: UPDATE queued_at transaction", dispatch.transaction)
    Session.commit = timed("Session.commit", Session.commit)  # type: ignore[method-assign]
    Session.refresh = timed("Session.refresh (task after publish)", Session.refresh)  # type: ignore[method-assign]
    Session.close = timed("Session.close (teardown)", Session.close)  # type: ignore[method-assign]


def timed_cm(name: str, cm: Callable[..., Any]) -> Any:
    @contextmanager
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        start = time.perf_counter()
        try:
            with cm(*args, **kwargs) as value:
                yield value
        finally:
            PHASES[name].append(time.perf_counter() - start)

    return wrapper


def publish_micro(settings: Settings, n: int) -> None:
    """What one publish costs: Celery's send_task (with and without the task-sent event the API's
    settings turn on) against one redis-py LPUSH of a message of the same size, same Redis db."""
    from celery import Celery

    from common.queue import TASK_NAMES, make_celery
    from common.states import TaskKind

    queue = host_queue(NO_WORKER_HOST)
    with_event = make_celery(settings)
    without_event = make_celery(settings)
    without_event.conf.task_send_sent_event = False
    broker = redis.Redis.from_url(settings.broker_url)
    payload = "x" * 1300  # about the size of a Celery protocol-2 message for one create task

    def send(app: Celery) -> Callable[[], object]:
        return lambda: app.send_task(TASK_NAMES[TaskKind.CREATE_VM], args=[str(uuid.uuid4())], queue=queue)

    rows = []
    for label, fn in (
        ("celery send_task (task_send_sent_event on, as the API)", send(with_event)),
        ("celery send_task (task_send_sent_event off)", send(without_event)),
        ("redis-py LPUSH of a 1.3 kB message", lambda: broker.lpush(queue, payload)),
    ):
        for _ in range(20):
            fn()  # warm-up: connections, queue declaration
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1000)
        rows.append([label, statistics.median(samples), sorted(samples)[int(n * 0.99) - 1]])
    broker.delete(queue)
    click.echo(f"\npublishing one message, {n} times each")
    click.echo(table(["publish", "median ms", "p99 ms"], rows))


def profile_get(app: Flask, sessions: Any, n: int) -> None:
    """GET /v1/tasks/<id> as the clients poll it, on a finished create (5 steps) if there is one:
    per-GET time in-process, database round trips, and cProfile's top functions by own time."""
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
    client = app.test_client()
    for _ in range(20):
        client.get(f"/v1/tasks/{task_id}")
    COUNTS.clear()
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(n):
        TRACE.clear()
        assert client.get(f"/v1/tasks/{task_id}").status_code == 200
    profiler.disable()
    wall = time.perf_counter() - start
    db_rt = sum(v for k, v in COUNTS.items() if k.startswith("db: "))
    trips = ", ".join(t.split("(")[0].strip()[:40] for t in TRACE)
    click.echo(
        f"\nGET /v1/tasks/{task_id}: {wall / n * 1000:.2f} ms per GET in-process (under cProfile), "
        f"{db_rt / n:.0f} database round trips: {trips}"
    )
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    click.echo(out.getvalue())


def drive(app: Flask, image: str, prefix: str, n: int) -> float:
    client = app.test_client()
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
    db_rt = sum(v for k, v in COUNTS.items() if k.startswith("db: "))
    counts = [[k, v / n] for k, v in sorted(COUNTS.items())]
    counts.append(["db: round trips (sum of the above db lines)", db_rt / n])
    click.echo(table(["per POST", "count"], counts))
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

            app = create_app(settings)
            count_sql(app.extensions["iaas"].engine)
            drive(app, image, prefixes[1] + "w", 20)  # warm-up: pools, compiled statement caches
            instrument_product()
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
