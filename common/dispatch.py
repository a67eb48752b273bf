"""Handing committed tasks to the broker (the outbox's publishing half)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from common.db import transaction
from common.models import Task
from common.queue import TASK_NAMES, host_queue
from common.states import TaskStatus

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


def publish_and_mark(celery: Celery, factory: sessionmaker[Session], task: Task) -> bool:
    """Publish, then record `queued_at` so the sweep knows this one left the building."""
    if not publish(celery, task):
        return False
    with transaction(factory) as session:
        session.execute(
            update(Task)
            .where(Task.id == task.id, Task.queued_at.is_(None))
            .values(queued_at=datetime.now(UTC))
        )
    return True


def resend_unqueued(celery: Celery, factory: sessionmaker[Session], grace_s: float) -> int:
    """Publish the pending tasks that were committed but never queued. Returns how many."""
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)
    with factory() as session:
        tasks = session.scalars(
            select(Task)
            .where(
                Task.status == TaskStatus.PENDING,
                Task.queued_at.is_(None),
                # recovered tasks are old but were queued before: the grace is for fresh ones only
                (Task.created_at < cutoff) | (Task.attempts > 0),
            )
            .order_by(Task.created_at)
        ).all()
    sent = sum(publish_and_mark(celery, factory, task) for task in tasks)
    if tasks:
        log.info("re-sent %d of %d unqueued tasks", sent, len(tasks))
    return sent
