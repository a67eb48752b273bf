"""The worker's Prometheus metrics, served on IAAS_WORKER_METRICS_PORT (worker/boot.py starts it).

Module-level, as prometheus_client expects: one worker process per host (the threads pool), so the
default registry holds them all. The sagas and the runner record; nothing here reads the database."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# From a fraction of a second (the test driver, a quick step) to the deadline of a slow host.
_SAGA_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

SAGA_DURATION = Histogram(
    "iaas_saga_duration_seconds",
    "Duration of one run of a task (a saga, or a reconciliation), by kind and outcome.",
    ["kind", "outcome"],
    buckets=_SAGA_BUCKETS,
)
STEP_DURATION = Histogram(
    "iaas_saga_step_duration_seconds",
    "Duration of one saga step's `do`, by saga kind, step and outcome.",
    ["kind", "step", "outcome"],
    buckets=_SAGA_BUCKETS,
)
TASK_RUNS = Counter(
    "iaas_task_runs",
    "Runs of tasks by kind and result: succeeded, failed, lease_lost (another run owns it now), "
    "not_pending (a duplicate message).",
    ["kind", "result"],
)
RECONCILE_FINDINGS = Counter(
    "iaas_reconcile_findings",
    "Findings of reconciliation by kind and the action configured for it.",
    ["kind", "action"],
)


def task_ran(kind: str, result: str, seconds: float | None = None) -> None:
    TASK_RUNS.labels(kind, result).inc()
    if seconds is not None:
        SAGA_DURATION.labels(kind, result).observe(seconds)
