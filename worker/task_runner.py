"""The shape of every task: claim the row (with a lease), load what the saga needs, run it while a
heartbeat keeps the lease, record the outcome -- all fenced by the attempt number."""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.orm import Session, sessionmaker

from common.config import Settings
from common.db import db_retrying, transaction
from common.models import Task, Vm
from common.states import TaskStatus
from worker import runtime
from worker.journal import DbJournal
from worker.saga import LeaseLost, SagaFailed, SagaRun, Step, StepTimeout, call_bounded
from worker.vm_sagas import VmContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    task_id: uuid.UUID
    attempt: int
    vm_id: uuid.UUID | None
    deadline: datetime


def owner_name() -> str:
    return f"{socket.gethostname()}:{threading.get_native_id()}"


def claim(sessions: sessionmaker[Session], settings: Settings, task_id: uuid.UUID) -> Claim | None:
    """pending -> running, compare-and-set: a duplicated message, or a second worker, finds it taken."""

    def unit() -> Claim | None:
        now = datetime.now(UTC)  # inside: a retry after a database outage starts a fresh lease
        with transaction(sessions) as session:
            row = session.execute(
                update(Task)
                .where(Task.id == task_id, Task.status == TaskStatus.PENDING)
                .values(
                    status=TaskStatus.RUNNING,
                    attempts=Task.attempts + 1,
                    started_at=func.coalesce(Task.started_at, now),
                    lease_owner=owner_name(),
                    lease_expires_at=now + timedelta(seconds=settings.task_lease_s),
                    deadline_at=func.coalesce(
                        Task.deadline_at, Task.created_at + timedelta(seconds=settings.task_deadline_s)
                    ),
                )
                .returning(Task.id, Task.attempts, Task.vm_id, Task.deadline_at)
            ).first()
        if row is None:
            return None
        task, attempt, vm_id, deadline = row
        return Claim(task, attempt, vm_id, deadline or now + timedelta(seconds=settings.task_deadline_s))

    return db_retrying(settings.db_retry_s)(unit)


def finish(
    sessions: sessionmaker[Session], settings: Settings, claim: Claim, status: TaskStatus, **values: Any
) -> bool:
    def unit() -> bool:
        with transaction(sessions) as session:
            done = session.execute(
                update(Task)
                .where(
                    Task.id == claim.task_id,
                    Task.attempts == claim.attempt,
                    Task.status == TaskStatus.RUNNING,
                )
                .values(
                    status=status,
                    finished_at=datetime.now(UTC),
                    lease_owner=None,
                    lease_expires_at=None,
                    **values,
                )
                .returning(Task.id)
            ).first()
        return done is not None

    return db_retrying(settings.db_retry_s)(unit)


@contextmanager
def heartbeat(sessions: sessionmaker[Session], settings: Settings, claim: Claim) -> Iterator[None]:
    """Renew the task's lease every third of its length until the block ends."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(settings.task_lease_s / 3):
            try:
                with transaction(sessions) as session:
                    session.execute(
                        update(Task)
                        .where(
                            Task.id == claim.task_id,
                            Task.attempts == claim.attempt,
                            Task.status == TaskStatus.RUNNING,
                        )
                        .values(lease_expires_at=datetime.now(UTC) + timedelta(seconds=settings.task_lease_s))
                    )
            except Exception as exc:  # the database may be restarting: try again next beat
                log.warning("could not renew the lease of task %s: %s", claim.task_id, exc)

    thread = threading.Thread(target=renew, name=f"lease-{claim.task_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def load_context(sessions: sessionmaker[Session], settings: Settings, claimed: Claim) -> VmContext:
    with sessions() as session:
        vm = session.get(Vm, claimed.vm_id)
        task = session.get(Task, claimed.task_id)
        if vm is None or task is None:
            raise LookupError(f"VM {claimed.vm_id} of task {claimed.task_id} does not exist")
        return VmContext.load(session, vm, settings, runtime.hypervisor(), sessions, task.request)


def run_vm_task(task_id: uuid.UUID, saga: str, steps: Sequence[Step[VmContext]]) -> None:
    sessions, settings = runtime.sessions(), runtime.settings()
    claimed = claim(sessions, settings, task_id)
    if claimed is None:
        log.info("task %s is not pending (duplicate delivery or unknown id); nothing to do", task_id)
        return
    abandon = (
        f"gave up after {claimed.attempt - 1} interrupted runs"
        if claimed.attempt > settings.max_attempts
        else None
    )
    try:
        with heartbeat(sessions, settings, claimed):
            ctx = db_retrying(settings.db_retry_s)(load_context, sessions, settings, claimed)
            SagaRun(
                name=saga,
                steps=steps,
                ctx=ctx,
                journal=DbJournal(sessions, task_id, claimed.attempt, settings.db_retry_s),
                failpoints=runtime.failpoints(),
                task_id=task_id,
                deadline=claimed.deadline,
                step_timeout_s=settings.step_timeout_s,
                abandon_reason=abandon,
            ).run()
    except LeaseLost as lost:
        log.warning("%s; leaving the task to its new owner", lost)
    except SagaFailed as failure:
        finish(sessions, settings, claimed, TaskStatus.FAILED, error=failure.as_error())
    except Exception as exc:
        log.exception("task %s failed before its saga could run", task_id)
        error = {"code": "task_failed", "message": f"{type(exc).__name__}: {exc}", "details": {}}
        finish(sessions, settings, claimed, TaskStatus.FAILED, error=error)
    else:
        finish(sessions, settings, claimed, TaskStatus.SUCCEEDED, result={"vm_id": str(ctx.vm_id)})


def run_reconcile_task(task_id: uuid.UUID | None) -> None:
    """A reconcile run: from the API (a task row exists) or from beat (the run makes its own row)."""
    from worker.reconcile import new_reconcile_task, reconcile_host

    sessions, settings = runtime.sessions(), runtime.settings()
    if task_id is None:
        task_id = new_reconcile_task(sessions, settings.host, {"scheduled": True})
    claimed = claim(sessions, settings, task_id)
    if claimed is None:
        log.info("reconcile task %s is not pending; nothing to do", task_id)
        return
    # Bounded by the task's deadline: a wedged libvirtd must not keep the run (and its heartbeat,
    # which would hide it from the sweep) alive for ever.
    budget = max((claimed.deadline - datetime.now(UTC)).total_seconds(), 1.0)
    try:
        with heartbeat(sessions, settings, claimed):
            result = call_bounded(
                lambda: reconcile_host(runtime.hypervisor(), sessions, runtime.engine(), settings, task_id),
                budget,
                f"reconciliation of host {settings.host}",
            )
    except StepTimeout as exc:
        log.error("reconcile task %s: %s", task_id, exc)
        error = {
            "code": "reconcile_timeout",
            "message": f"{exc}: libvirtd did not answer in time. Check that `virsh -c "
            f"{settings.libvirt_uri} list --all` answers; the next scheduled run tries again.",
            "details": {"timeout_s": round(budget, 1)},
        }
        finish(sessions, settings, claimed, TaskStatus.FAILED, error=error)
    except Exception as exc:
        log.exception("reconcile task %s failed", task_id)
        error = {"code": "reconcile_failed", "message": f"{type(exc).__name__}: {exc}", "details": {}}
        finish(sessions, settings, claimed, TaskStatus.FAILED, error=error)
    else:
        finish(sessions, settings, claimed, TaskStatus.SUCCEEDED, result=result)
