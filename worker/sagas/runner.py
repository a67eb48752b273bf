"""The shape of every task: claim the row (with a lease), load what the saga needs, run it while a
heartbeat keeps the lease, record the outcome -- every write fenced by the attempt number, and every
status change made by common/lifecycle.py. A task that failed ends, after its failure is recorded, by
raising TaskFailed, so that Celery's own state of it (Flower, events) tells the truth too. While it
runs, every log line names it (common/logs.py)."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, noload, sessionmaker

from common import lifecycle, logs
from common.config import Settings
from common.db import db_retrying, in_transaction, transaction
from common.lifecycle import Claim
from common.models import Task, Vm
from common.states import TaskKind
from worker import metrics, resources
from worker.sagas.context import VmContext
from worker.sagas.engine import LeaseLost, SagaFailed, SagaRun, Step, StepTimeout, call_bounded
from worker.sagas.journal import DbJournal

log = logging.getLogger(__name__)


def claim(sessions: sessionmaker[Session], settings: Settings, task_id: uuid.UUID) -> Claim | None:
    """pending -> running: a duplicated message, or a second worker, finds it taken."""
    owner = resources.owner_name()
    return in_transaction(
        sessions,
        settings.db_retry_s,
        lambda session: lifecycle.claim(
            session, task_id, owner, settings.task_lease_s, settings.task_deadline_s
        ),
    )


def finish(
    sessions: sessionmaker[Session],
    settings: Settings,
    claimed: Claim,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> bool:
    return in_transaction(
        sessions,
        settings.db_retry_s,
        lambda session: lifecycle.finish(session, claimed, result=result, error=error),
    )


@contextmanager
def heartbeat(sessions: sessionmaker[Session], settings: Settings, claimed: Claim) -> Iterator[None]:
    """Renew the task's lease every third of its length until the block ends."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(settings.task_lease_s / 3):
            try:
                with transaction(sessions) as session:
                    lifecycle.renew_lease(session, claimed, settings.task_lease_s)
            except Exception as exc:  # the database may be restarting: try again next beat
                log.warning("could not renew the lease of task %s: %s", claimed.task_id, exc)

    # With the task's context: its warnings name the task (common/logs.py).
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(renew,), name=f"lease-{claimed.task_id}", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def load_context(sessions: sessionmaker[Session], settings: Settings, claimed: Claim) -> VmContext:
    with sessions() as session:
        vm = session.get(Vm, claimed.vm_id)
        task = session.get(Task, claimed.task_id, options=[noload(Task.steps)])  # the journal reads them
        if vm is None or task is None:
            raise LookupError(f"VM {claimed.vm_id} of task {claimed.task_id} does not exist")
        return VmContext.load(session, vm, settings, resources.hypervisor(), sessions, task.request)


class TaskFailed(Exception):
    """Raised by a task body after its failure is recorded in PostgreSQL, so that Celery (and Flower,
    and its events) shows the task as FAILURE with the error's code, not SUCCESS. The tasks declare it
    in `throws`: logged as an expected failure, without a traceback. With `task_acks_late` a task that
    raises is acknowledged like one that returns (`task_acks_on_failure_or_timeout`, on by default):
    no redelivery, and no Celery retry (no task has `autoretry_for`); `task_reject_on_worker_lost`
    concerns only a worker that dies."""

    def __init__(self, code: str, message: str) -> None:
        # Both in `args`: Celery pickles the exception on its way to the events and the log, and an
        # exception that cannot be rebuilt from its args comes out as another class.
        super().__init__(code, message)
        self.code, self.message = code, message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def run_vm_task(task_id: uuid.UUID, saga: TaskKind, steps: Sequence[Step[VmContext]]) -> None:
    """Raises TaskFailed once a failed outcome is recorded."""
    with logs.task_context(task_id, saga):
        _run_vm_task(task_id, saga, steps)


def _run_vm_task(task_id: uuid.UUID, saga: TaskKind, steps: Sequence[Step[VmContext]]) -> None:
    sessions, settings = resources.sessions(), resources.settings()
    claimed = claim(sessions, settings, task_id)
    if claimed is None:
        log.info("task %s is not pending (duplicate delivery or unknown id); nothing to do", task_id)
        metrics.task_ran(saga, "not_pending")
        return
    logs.bind_vm(claimed.vm_id)
    abandon = (
        f"gave up after {claimed.attempt - 1} interrupted runs"
        if claimed.attempt > settings.max_attempts
        else None
    )
    started = time.perf_counter()
    try:
        with heartbeat(sessions, settings, claimed):
            ctx = db_retrying(settings.db_retry_s)(load_context, sessions, settings, claimed)
            told = SagaRun(
                name=saga,
                steps=steps,
                ctx=ctx,
                journal=DbJournal(sessions, claimed, settings.db_retry_s),
                failpoints=resources.failpoints(),
                task_id=task_id,
                deadline=claimed.deadline,
                step_timeout_s=settings.step_timeout_s,
                abandon_reason=abandon,
            ).run()
    except LeaseLost as lost:
        log.warning("%s; leaving the task to its new owner", lost)
        metrics.task_ran(saga, "lease_lost", time.perf_counter() - started)
        return
    except SagaFailed as failure:
        error = failure.as_error()
    except Exception as exc:
        log.exception("task %s failed before its saga could run", task_id)
        error = {"code": "task_failed", "message": f"{type(exc).__name__}: {exc}", "details": {}}
    else:
        # What the steps told (a stop: graceful or forced) goes with the VM id into the result.
        recorded = finish(sessions, settings, claimed, result={"vm_id": str(ctx.vm_id), **told})
        metrics.task_ran(saga, "succeeded" if recorded else "lease_lost", time.perf_counter() - started)
        return
    _record_failure(sessions, settings, claimed, saga, error, started)


def _record_failure(
    sessions: sessionmaker[Session],
    settings: Settings,
    claimed: Claim,
    kind: str,
    error: dict[str, Any],
    started: float,
) -> None:
    """Record the failure, then tell Celery. A run fenced out meanwhile records nothing and raises
    nothing: the task's outcome is its new owner's to tell."""
    recorded = finish(sessions, settings, claimed, error=error)
    metrics.task_ran(kind, "failed" if recorded else "lease_lost", time.perf_counter() - started)
    if recorded:
        raise TaskFailed(error["code"], error["message"])


def run_reconcile_task(task_id: uuid.UUID | None) -> None:
    """A reconcile run: from the API (a task row exists) or from beat (the run records its own row).
    Raises TaskFailed once a failed outcome is recorded."""
    sessions, settings = resources.sessions(), resources.settings()
    if task_id is None:
        scheduled = lifecycle.new_task(TaskKind.RECONCILE, settings.host, {"scheduled": True})
        with transaction(sessions) as session:
            session.add(scheduled)
        task_id = scheduled.id
    with logs.task_context(task_id, TaskKind.RECONCILE):
        _run_reconcile_task(sessions, settings, task_id)


def _run_reconcile_task(sessions: sessionmaker[Session], settings: Settings, task_id: uuid.UUID) -> None:
    from worker.reconcile.run import reconcile_host

    kind = TaskKind.RECONCILE
    claimed = claim(sessions, settings, task_id)
    if claimed is None:
        log.info("reconcile task %s is not pending; nothing to do", task_id)
        metrics.task_ran(kind, "not_pending")
        return
    # Bounded by the task's deadline: a wedged libvirtd must not keep the run (and its heartbeat,
    # which would hide it from the sweep) alive for ever.
    budget = max((claimed.deadline - datetime.now(UTC)).total_seconds(), 1.0)
    started = time.perf_counter()

    def reconcile() -> dict[str, Any]:
        return reconcile_host(resources.hypervisor(), sessions, resources.engine(), settings, claimed.task_id)

    try:
        with heartbeat(sessions, settings, claimed):
            result = call_bounded(reconcile, budget, f"reconciliation of host {settings.host}")
    except StepTimeout as exc:
        log.error("reconcile task %s: %s", task_id, exc)
        error = {
            "code": "reconcile_timeout",
            "message": f"{exc}: libvirtd did not answer in time. Check that `virsh -c "
            f"{settings.libvirt_uri} list --all` answers; the next scheduled run tries again.",
            "details": {"timeout_s": round(budget, 1)},
        }
    except Exception as exc:
        log.exception("reconcile task %s failed", task_id)
        error = {"code": "reconcile_failed", "message": f"{type(exc).__name__}: {exc}", "details": {}}
    else:
        recorded = finish(sessions, settings, claimed, result=result)
        metrics.task_ran(kind, "succeeded" if recorded else "lease_lost", time.perf_counter() - started)
        return
    _record_failure(sessions, settings, claimed, kind, error, started)
