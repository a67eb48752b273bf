"""The task and VM state machines, walked as tables: every transition the table lists is allowed,
every other one is refused, and every named operation stays inside its row."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from common import lifecycle
from common.lifecycle import (
    ALLOWED_TASK_TRANSITIONS,
    ALLOWED_VM_TRANSITIONS,
    NEW,
    TASK_TRANSITIONS,
    VM_TRANSITIONS,
    InvalidTransition,
    TaskOp,
    VmOp,
    check_task_transition,
    check_vm_transition,
)
from common.states import TaskStatus, VmStatus

# Every (from, to) pair of each machine, with the table that allows some of them and its check.
PAIRS = [
    *((old, new, ALLOWED_TASK_TRANSITIONS, check_task_transition)
      for old, new in itertools.product([NEW, *TaskStatus], TaskStatus)),
    *((old, new, ALLOWED_VM_TRANSITIONS, check_vm_transition)
      for old, new in itertools.product([NEW, *VmStatus], VmStatus)),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "allowed", "check"), PAIRS)
def test_every_transition_outside_the_table_is_refused(
    old: object, new: object, allowed: frozenset[tuple[object, object]], check: Callable[[Any, Any], None]
) -> None:
    if (old, new) in allowed:
        check(old, new)
    else:
        with pytest.raises(InvalidTransition):
            check(old, new)


def test_every_operation_has_a_row_and_finished_tasks_never_move() -> None:
    assert set(TASK_TRANSITIONS) == set(TaskOp)
    assert set(VM_TRANSITIONS) == set(VmOp)
    finished = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)
    assert not [pair for pair in ALLOWED_TASK_TRANSITIONS if pair[0] in finished]
    assert not [pair for pair in ALLOWED_VM_TRANSITIONS if pair[0] == VmStatus.DELETED]


def _expected_and_set(statement: object) -> tuple[list[str], object]:
    params = statement.compile().params  # type: ignore[attr-defined]
    expected = [str(v) for k, values in params.items() if k.startswith("status_") for v in values]
    return sorted(expected), params["status"]


def test_the_table_is_what_the_updates_are_built_from() -> None:
    """A compare-and-set statement expects exactly its row's source states and sets its target
    (rows whose only source is NEW are inserts, not updates)."""
    rows = [(lifecycle._vm_cas, op, row) for op, row in VM_TRANSITIONS.items()]
    rows += [(lifecycle._task_cas, op, row) for op, row in TASK_TRANSITIONS.items()]
    for build, op, (olds, new) in rows:
        sources = sorted(str(s) for s in olds if s is not NEW)
        if sources:
            assert _expected_and_set(build(op)) == (sources, new), op


def test_new_rows_start_where_the_table_says() -> None:
    assert lifecycle.new_vm(name="a", image="tiny", vcpus=1, memory_mib=64, disk_gib=1, host="h").status == (
        VmStatus.PENDING
    )
    assert lifecycle.new_task("create_vm", "h", {}).status == TaskStatus.PENDING  # type: ignore[arg-type]
