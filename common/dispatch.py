"""Handing committed tasks to the broker: the outbox's publishing half.

A task is committed with `queued_at` NULL, then published; `queued_at` is then set as a hint, off the
request path, in batches (QueuedMarks). A task whose publish failed, or whose
API died before publishing, stays unqueued, and the sweep sends it after IAAS_OUTBOX_GRACE_S; a lost
hint only means one duplicate message, which the claim's compare-and-set makes harmless. A committed
task is never lost."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Collection
from datetime import UTC, datetime

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from common import lifecycle
from common.models import Task
from common.queue import TASK_NAMES, host_queue

log = logging.getLogger(__name__)

# Fail fast when the broker is down: the row is committed, the sweep re-sends it later.
_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def publish(celery: Celery, task: Task) -> bool:
    """Send one committed task to its host's queue. False (and a log line) when the broker refused."""
    try:
        celery.send_task(
            TASK_NAMES[task.kind],
            args=[str(task.id)],
            queue=host_queue(task.host),
            task_id=str(task.id),
            argsrepr=flower_args(task),
            retry=True,
            retry_policy=_PUBLISH_RETRY,
        )
    except Exception as exc:  # any broker/transport failure: the outbox sweep will re-send
        log.warning("task %s committed but not queued (%s); the sweep will re-send it", task.id, exc)
        return False
    return True


def flower_args(task: Task) -> str:
    """What Flower (and the worker's "received" line) shows as the task's arguments: the task id it
    really gets, then the VM and the host it acts on, so an operator need not look the id up. Display
    only (Celery's `argsrepr`); the message carries the id alone."""
    vm = f" vm={task.vm_id}" if task.vm_id else ""
    return f"['{task.id}']{vm} host={task.host}"


def publish_to_hosts(celery: Celery, name: str, args: list[str], hosts: Collection[str]) -> list[str]:
    """Send task `name` with `args` to the queue of each of `hosts`; the hosts whose message the broker
    refused. For work with no row of its own to re-send it from: the caller decides what a refusal means."""
    failed = []
    for host in hosts:
        try:
            celery.send_task(name, args=args, queue=host_queue(host), retry=True, retry_policy=_PUBLISH_RETRY)
        except Exception as exc:  # any broker/transport failure, as in publish
            log.warning("%s for host %s not queued (%s)", name, host, exc)
            failed.append(host)
    return failed


def enqueue(celery: Celery, marks: QueuedMarks, task: Task) -> datetime | None:
    """Publish a committed task and note when, for `marks` to record. Returns that time, or None when
    the broker refused (the sweep sends it later). The time is taken before publishing: a worker may
    start the task before `publish` returns, and `queued_at` must not come after `started_at`
    (common/lifecycle.mark_queued keeps that too, for clocks that disagree)."""
    at = datetime.now(UTC)
    if not publish(celery, task):
        return None
    marks.add(task.id, at)
    return at


class QueuedMarks:
    """`queued_at` marks, written off the request path by a thread of their own, as many as have
    gathered per round trip, through `engine` (autocommit, asynchronous commit: common.db).

    A mark only saves the outbox sweep a re-send: one lost with this process (or with a PostgreSQL
    crash) means one duplicate message after IAAS_OUTBOX_GRACE_S, which the claim makes harmless."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pending: dict[uuid.UUID, datetime] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, task_id: uuid.UUID, at: datetime) -> None:
        with self._lock:
            self._pending[task_id] = at
            if self._thread is None or not self._thread.is_alive():  # started lazily: after a fork
                self._thread = threading.Thread(target=self._run, name="queued-marks", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                continue
            try:
                with self._engine.connect() as connection:
                    lifecycle.mark_many_queued(connection, batch)
            except Exception as exc:  # queued all the same; without the marks the sweep sends copies
                log.warning("%d tasks queued, but recording that failed (%s)", len(batch), exc)


def resend_unqueued(
    celery: Celery,
    sessions: sessionmaker[Session],
    grace_s: float,
    only: Collection[uuid.UUID] | None = None,
) -> int:
    """Publish the pending tasks that were committed but never queued (`only` these, if given).
    Returns how many were sent."""
    with sessions() as session:
        tasks = lifecycle.unqueued_tasks(session, grace_s, only)
    sent = 0
    for task in tasks:
        at = datetime.now(UTC)  # before publishing, as in enqueue
        if publish(celery, task):
            with sessions.begin() as session:
                lifecycle.mark_queued(session, task.id, at)
            sent += 1
    if tasks:
        log.info("re-sent %d of %d unqueued tasks", sent, len(tasks))
    return sent
