"""Handing committed tasks to the broker: the outbox's publishing half.

A task is committed with `queued_at` NULL, then published; `queued_at` is then set as a hint (one
autocommitted UPDATE that does not wait for the WAL flush). A task whose publish failed, or whose
API died before publishing, stays unqueued, and the sweep sends it after IAAS_OUTBOX_GRACE_S; a lost
hint only means one duplicate message, which the claim's compare-and-set makes harmless. A committed
task is never lost."""

from __future__ import annotations

import logging
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
            retry=True,
            retry_policy=_PUBLISH_RETRY,
        )
    except Exception as exc:  # any broker/transport failure: the outbox sweep will re-send
        log.warning("task %s committed but not queued (%s); the sweep will re-send it", task.id, exc)
        return False
    return True


def enqueue(celery: Celery, autocommit: Engine, task: Task) -> datetime | None:
    """Publish a committed task and record when (through `autocommit`, common.db.make_autocommit_engine).
    Returns that time, or None when the broker refused (the sweep sends it later)."""
    if not publish(celery, task):
        return None
    at = datetime.now(UTC)
    try:
        with Session(autocommit) as session:
            lifecycle.mark_queued(session, task.id, at)
    except Exception as exc:  # queued all the same; without the mark the sweep sends a harmless copy
        log.warning("task %s queued, but recording that failed (%s)", task.id, exc)
    return at


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
        if publish(celery, task):
            with sessions.begin() as session:
                lifecycle.mark_queued(session, task.id, datetime.now(UTC))
            sent += 1
    if tasks:
        log.info("re-sent %d of %d unqueued tasks", sent, len(tasks))
    return sent
