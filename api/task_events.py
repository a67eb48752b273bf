"""Waking the requests that wait for a task to change (GET /v1/tasks/<id>?wait=).

PostgreSQL says when a task changes: a trigger (migration 0007) sends NOTIFY on channel `iaas_task`
with the task's id in the transaction that writes it. One listener per API process -- a thread with a
connection of its own -- LISTENs and sets the Event of every request waiting for that id; the
requests hold no database connection while they wait. Under gunicorn's gevent workers `threading`,
`select` and psycopg2 (psycogreen's wait callback) are cooperative, so the thread is a greenlet and
each waiter costs an Event, not a connection; under the Flask dev server and test client it is a
real thread, and the same code.

A notification can be missed only while the listener is not listening (the database restarted, the
connection dropped): when it listens again it wakes every waiter, and each reads its task again. A
waiter also reads its task again when its time is up, so what it answers is always read after the
wait, never remembered from before.

The waiters of one task that one notification woke share one read of it (SharedReads): a change to a
task 200 clients wait on costs one SELECT per process, not 200."""

from __future__ import annotations

import logging
import select
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from psycopg2 import extensions
from sqlalchemy import make_url

from common.db import database_url_for

log = logging.getLogger(__name__)

CHANNEL = "iaas_task"
APPLICATION_NAME = "iaas-task-events"  # how the listener's session shows in pg_stat_activity
# An idle listener checks its connection this often (a dead server may never close the socket).
_IDLE_CHECK_S = 5.0
# How often a stopped listener notices it was stopped while nothing arrives.
_TICK_S = 1.0
_RECONNECT_S = (0.1, 5.0)  # first and longest pause before connecting again


@dataclass(eq=False)  # kept in sets: each is itself
class Wake:
    """A waiter's wake-up: set when its task may have changed, `at` when the notification arrived."""

    event: threading.Event = field(default_factory=threading.Event)
    at: float = 0.0  # time.monotonic()

    def set(self) -> None:
        self.at = time.monotonic()
        self.event.set()


@dataclass
class _Read:
    began: float
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    ok: bool = False


class SharedReads:
    """One read for the many waiters one notification woke: a waiter takes the result of a read of
    the same key that began after its notification arrived (so it sees the change), or makes one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: dict[Hashable, _Read] = {}

    def read(self, key: Hashable, since: float, read: Callable[[], Any]) -> Any:
        with self._lock:
            shared = self._reads.get(key)
            mine = shared is None or shared.began < since
            if mine:
                shared = self._reads[key] = _Read(time.monotonic())
        assert shared is not None
        if not mine:
            shared.done.wait()
            return shared.result if shared.ok else read()  # it failed: fail (or not) on our own
        try:
            shared.result, shared.ok = read(), True
            return shared.result
        finally:
            shared.done.set()
            with self._lock:
                if self._reads.get(key) is shared:
                    del self._reads[key]


class TaskEvents:
    """The process's listener (started with the first waiter: after gunicorn forks) and its waiters."""

    def __init__(self, database_url: str) -> None:
        self._dsn = database_url_for(database_url, make_url(database_url).database or "", driver="postgresql")
        self._waiters: dict[str, set[Wake]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # Set while the listener LISTENs; `connections` counts how often it started to (tests, logs).
        self.listening = threading.Event()
        self.connections = 0
        self.reads = SharedReads()

    @contextmanager
    def watch(self, task_id: uuid.UUID) -> Iterator[Wake]:
        """A Wake set when task `task_id` may have changed. Take it before reading the task: a
        change between the read and the wait then still sets it."""
        event, key = Wake(), str(task_id)
        with self._lock:
            if not self.closed and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="task-events", daemon=True)
                self._thread.start()
            self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                events = self._waiters.get(key, set())
                events.discard(event)
                if not events:
                    self._waiters.pop(key, None)

    def waiting(self) -> int:
        with self._lock:
            return sum(len(events) for events in self._waiters.values())

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Stop listening (within a tick) for good; the waiters left are woken to read once more and
        answer (the process is stopping: gunicorn's graceful shutdown should not wait for them)."""
        self._stop.set()
        self._wake(None)

    def _wake(self, task_ids: set[str] | None) -> None:
        """Set the Events of the waiters of `task_ids` (None: of every waiter)."""
        with self._lock:
            keys = self._waiters.keys() if task_ids is None else task_ids & self._waiters.keys()
            wakes = [wake for key in keys for wake in self._waiters[key]]
        for wake in wakes:
            wake.set()

    def _run(self) -> None:
        pause = _RECONNECT_S[0]
        while not self._stop.is_set():
            connections = self.connections
            try:
                self._listen()
            except (psycopg2.Error, OSError) as exc:
                if self.connections != connections:  # it had listened until now: try again soon
                    pause = _RECONNECT_S[0]
                log.warning("task events: not listening (%s); again in %.1f s", exc, pause)
            finally:
                self.listening.clear()
            self._stop.wait(pause)
            pause = min(pause * 2, _RECONNECT_S[1])

    def _listen(self) -> None:
        # TCP keepalives: a server that vanished without closing the connection is noticed too.
        conn = psycopg2.connect(
            self._dsn, connect_timeout=3, application_name=APPLICATION_NAME,
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
        )  # fmt: skip
        try:
            conn.set_isolation_level(extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cur:
                cur.execute(f"LISTEN {CHANNEL}")
            self.connections += 1
            self.listening.set()
            self._wake(None)  # whatever changed while nobody listened: every waiter reads again
            idle = 0.0
            while not self._stop.is_set():
                if select.select([conn], [], [], _TICK_S) == ([], [], []):
                    idle += _TICK_S
                    if idle >= _IDLE_CHECK_S:  # raises if the server is gone
                        with conn.cursor() as cur:
                            cur.execute("SELECT 1")
                        idle = 0.0
                else:
                    idle = 0.0
                conn.poll()  # raises if the server closed the connection
                if conn.notifies:
                    self._wake({notify.payload for notify in conn.notifies})
                    conn.notifies.clear()
        finally:
            conn.close()
