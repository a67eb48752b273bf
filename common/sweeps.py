"""Periodic repairs that need only PostgreSQL and the broker (beat sends them to the control queue):

- recovery: a `running` task whose lease ran out lost its worker; it goes back to `pending` and is
  sent again, and its next run resumes the saga from the journal;
- outbox: a `pending` task committed but never queued (broker down, API died after the commit) is
  sent; one queued long ago but never started (a message lost with a Redis restart) is sent again --
  the claim's compare-and-set makes a duplicate harmless;
- idempotency keys past their expiry are dropped;
- finished tasks and deleted VMs older than the retention are purged (common/retention.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from common import lifecycle
from common.config import Settings
from common.db import transaction
from common.dispatch import resend_unqueued
from common.models import IdempotencyKey
from common.retention import purge_expired

log = logging.getLogger(__name__)


def recover_expired_leases(factory: sessionmaker[Session]) -> list[str]:
    with transaction(factory) as session:
        ids = lifecycle.requeue_expired(session)
    if ids:
        log.warning("recovered %d tasks whose worker stopped renewing its lease: %s", len(ids), ids)
    return [str(i) for i in ids]


def forget_stale_queueing(factory: sessionmaker[Session], older_than_s: float) -> list[str]:
    with transaction(factory) as session:
        return [str(i) for i in lifecycle.forget_stale_queueing(session, older_than_s)]


def expire_idempotency_keys(factory: sessionmaker[Session]) -> int:
    with transaction(factory) as session:
        return len(
            session.scalars(
                delete(IdempotencyKey)
                .where(IdempotencyKey.expires_at < datetime.now(UTC))
                .returning(IdempotencyKey.key)
            ).all()
        )


def sweep(celery: Celery, factory: sessionmaker[Session], settings: Settings) -> dict[str, Any]:
    """One pass over every host's tasks (any worker may run it: it needs no hypervisor)."""
    recovered = recover_expired_leases(factory)
    requeued = forget_stale_queueing(factory, settings.requeue_after_s)
    sent = resend_unqueued(celery, factory, settings.outbox_grace_s)
    expired = expire_idempotency_keys(factory)
    purged = purge_expired(factory, settings.retention_days, settings.retention_batch)
    return {
        "recovered": recovered,
        "requeued": requeued,
        "sent": sent,
        "expired_keys": expired,
        "purged": purged,
    }
