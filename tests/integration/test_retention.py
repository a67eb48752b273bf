"""Retention on the real database: old finished tasks (with their steps and keys) and old deleted VMs
go, in batches; everything younger, unfinished or still referred to stays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from common import lifecycle
from common.db import transaction
from common.models import IdempotencyKey, Task, TaskStep, Vm
from common.retention import MAX_BATCHES_PER_SWEEP, purge_expired
from common.states import TaskKind, TaskStatus, VmStatus
from tests.support.tokens import project_id

OLD = datetime.now(UTC) - timedelta(days=45)
RECENT = datetime.now(UTC) - timedelta(days=2)


def add_vm(
    session: Any, project: uuid.UUID, status: VmStatus, deleted_at: datetime | None = None
) -> uuid.UUID:
    vm = Vm(
        id=uuid.uuid4(), project_id=project, name=f"r-{uuid.uuid4().hex[:8]}", image="tiny", vcpus=1,
        memory_mib=64, disk_gib=1, status=status, power_state="shutoff", host="itest", deleted_at=deleted_at,
    )  # fmt: skip
    session.add(vm)
    session.flush()
    return vm.id


def add_task(
    session: Any,
    project: uuid.UUID,
    status: TaskStatus,
    finished_at: datetime | None,
    vm_id: uuid.UUID | None,
) -> uuid.UUID:
    task = lifecycle.new_task(TaskKind.RECONCILE, "itest", {}, vm_id=vm_id, project_id=project)
    task.status, task.finished_at = status, finished_at
    task.created_at = finished_at or datetime.now(UTC)
    session.add(task)
    session.flush()
    session.add(TaskStep(task_id=task.id, seq=1, name="step", status="succeeded"))
    session.add(IdempotencyKey(project_id=project, key=f"k-{task.id}", method="POST", path="/v1/vms",
                               body_sha256="0" * 64, status_code=202, response={}, task_id=task.id,
                               expires_at=datetime.now(UTC) + timedelta(days=1)))  # fmt: skip
    return task.id


def count(sessions: Any, model: Any) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_old_finished_tasks_and_deleted_vms_go_and_the_rest_stays(sessions: Any) -> None:
    project = project_id(sessions)
    with transaction(sessions) as session:
        old_deleted = add_vm(session, project, VmStatus.DELETED, OLD)
        add_task(session, project, TaskStatus.SUCCEEDED, OLD, old_deleted)
        kept_by_task = add_vm(session, project, VmStatus.DELETED, OLD)  # its task is recent
        recent_task = add_task(session, project, TaskStatus.SUCCEEDED, RECENT, kept_by_task)
        recently_deleted = add_vm(session, project, VmStatus.DELETED, RECENT)
        live = add_vm(session, project, VmStatus.STOPPED)
        old_failed = add_task(session, project, TaskStatus.FAILED, OLD, live)
        unfinished = add_task(session, project, TaskStatus.PENDING, None, None)

    purged = purge_expired(sessions, retention_days=30, batch=500)

    assert purged == {"tasks": 2, "vms": 1}
    with sessions() as session:
        vms = set(session.scalars(select(Vm.id)))
        tasks = set(session.scalars(select(Task.id)))
        assert vms == {kept_by_task, recently_deleted, live}
        assert tasks == {recent_task, unfinished}
        assert old_failed not in tasks and old_deleted not in vms
        # steps and idempotency keys went with their tasks
        assert set(session.scalars(select(TaskStep.task_id))) == tasks
        assert set(session.scalars(select(IdempotencyKey.task_id))) == tasks


def test_purging_works_in_bounded_batches(sessions: Any) -> None:
    project = project_id(sessions)
    backlog = 3 * (MAX_BATCHES_PER_SWEEP + 2)
    with transaction(sessions) as session:
        for _ in range(backlog):
            add_task(session, project, TaskStatus.SUCCEEDED, OLD, None)

    first = purge_expired(sessions, retention_days=30, batch=2)
    assert first["tasks"] == 2 * MAX_BATCHES_PER_SWEEP  # a sweep stops after its batches
    assert count(sessions, Task) == backlog - 2 * MAX_BATCHES_PER_SWEEP
    later = [purge_expired(sessions, retention_days=30, batch=2)["tasks"] for _ in range(3)]
    assert later == [backlog - 2 * MAX_BATCHES_PER_SWEEP, 0, 0]  # the next sweep works the rest off
    assert count(sessions, Task) == 0
