"""Checks a worker makes as it starts (Celery imports this module at boot, with the task modules), so
a bad setting stops it at once with a clear message instead of failing its first task."""

from __future__ import annotations

from worker import runtime
from worker.reconcile_findings import parse_actions


def check_configuration() -> None:
    runtime.failpoints()  # IAAS_FAILPOINTS
    parse_actions(runtime.settings().reconcile_actions)  # IAAS_RECONCILE_ACTIONS


check_configuration()
