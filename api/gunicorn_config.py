"""gunicorn's settings for the API, as scripts/stack.sh starts it:

    gunicorn -c api/gunicorn_config.py --bind HOST:PORT 'api:create_app()'

(the file, not `python:api.gunicorn_config`: so the master does not import the app before the workers
fork and gevent patches them). A gevent worker serves each connection in a greenlet, so a client that
sends its request slowly, or never finishes it, holds one greenlet, not a worker: the two workers keep
answering everyone else. psycopg2 yields to the other greenlets while it waits for PostgreSQL through
psycogreen's wait callback, installed in each worker after the fork (`wait_for_postgres`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from common.config import get_settings
from common.logs import dict_config

worker_class = "gevent"
workers = 2
# Connections each worker serves at once; more wait in the listen backlog.
worker_connections = 1000
# A worker whose event loop has not reported for this long is killed and replaced (a CPU-bound loop;
# slow clients cannot cause it, their greenlets wait).
timeout = 30
# On SIGTERM (`make down`) requests in flight get this long to finish.
graceful_timeout = 20
# Seconds a connection may take to send a complete request head, the first one as every later one
# on a kept-alive connection; then it is closed. This is what bounds a slow or stalled client.
keepalive = 5
accesslog = "-"
# gunicorn's lines and the app's through one handler, as text or JSON (IAAS_LOG_FORMAT), each line of
# a request naming nothing more than it did; the task context never applies here.
logconfig_dict = dict_config(get_settings().log_format)
# gunicornc's control socket is not used here; by default it is made under $HOME, which the
# unprivileged service user does not own.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Each worker's metrics files (api/metrics.py) start empty: counts of an earlier run of the API
    would be added to this one's."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        for stale in Path(folder).glob("*.db"):
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """prometheus_client's hook for a gunicorn worker that exited (replaced after a timeout, or at
    shutdown): its live-gauge files go; its counters stay counted, as a counter must."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_fork(server: Any, worker: Any) -> None:
    """psycopg2 waits for PostgreSQL through gevent instead of blocking the worker's every greenlet;
    a graceful stop answers the requests that wait for a task at once."""
    from psycopg2 import extensions

    extensions.set_wait_callback(wait_for_postgres)
    answer_waiters_on_exit(worker)


def answer_waiters_on_exit(worker: Any) -> None:
    """On SIGTERM, besides gunicorn's own handling (stop accepting, let requests finish within
    `graceful_timeout`), end the long-polls (GET /v1/tasks/<id>?wait=): each answers its task as it is
    now, instead of holding the stop for up to 60 s and then being cut off. Set before the worker
    installs its signal handlers (post_fork runs first), which take `worker.handle_exit` as it is then."""
    original = worker.handle_exit

    def handle_exit(sig: int, frame: Any) -> None:
        original(sig, frame)
        runtime = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("iaas")
        if runtime is not None:
            import gevent

            gevent.spawn(runtime.task_events.close)  # out of the signal handler, as gunicorn does

    worker.handle_exit = handle_exit


def wait_for_postgres(conn: Any) -> None:
    """psycogreen's wait callback, keeping the connection's `connect_timeout` (common/db.py: fail fast,
    503, when the database does not answer). With a wait callback psycopg2 connects asynchronously,
    and libpq enforces that timeout only on blocking connects: without this a server that accepts
    and then says nothing would hold the request until TCP gives up."""
    from psycogreen.gevent import gevent_wait_callback
    from psycopg2 import OperationalError, extensions

    timeout = None
    if conn.status == extensions.STATUS_SETUP:  # still connecting
        timeout = float(extensions.parse_dsn(conn.dsn).get("connect_timeout") or 0) or None
    try:
        gevent_wait_callback(conn, timeout=timeout)
    except TimeoutError as exc:  # gevent's wait_read/wait_write ran out
        raise OperationalError(f"timeout expired: no answer from PostgreSQL within {timeout} s") from exc
