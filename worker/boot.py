"""What a worker does as it starts, on Celery's worker signals:

- `after_setup_logger` / `after_setup_task_logger`: every handler Celery made gets the running task's
  context (common/logs.py) and IAAS_LOG_FORMAT's format.
- `celeryd_init`: check the settings a task would trip over (failpoints, reconcile actions), so a bad
  one stops the worker at once with a clear message instead of failing its first task; and learn the
  node name, which names this worker's leases.
- `worker_ready`: register this host and this worker's node name, so that the API may send requests
  to its queue and remote-control commands to this worker (the console log); then take
  over the tasks an earlier incarnation of this worker left running. Only one process runs under a
  node name, so a lease of the same name and another incarnation belongs to a process that is gone
  (SIGKILLed, crashed, its host rebooted): its tasks go back to pending and are sent again at once,
  instead of waiting for their lease to run out. And serve this worker's Prometheus metrics
  (IAAS_WORKER_METRICS_PORT)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_init, worker_ready

from common import hosts, lifecycle, logs, metrics
from common.db import in_transaction
from common.dispatch import resend_unqueued
from worker import resources
from worker.reconcile.findings import parse_actions

log = logging.getLogger(__name__)


@after_setup_logger.connect
def log_with_task_context(logger: logging.Logger | None = None, **kwargs: Any) -> None:
    """Celery's own line format with the task's context appended, or JSON lines."""
    text = f"{kwargs['format']}%(task_context)s" if kwargs.get("format") else logs.TEXT_FORMAT
    for handler in logger.handlers if logger is not None else ():
        logs.install(handler, resources.settings().log_format, text)


@after_setup_task_logger.connect
def task_logger_with_task_context(logger: logging.Logger | None = None, **_kwargs: Any) -> None:
    """Celery's task logger names its task already (its TaskFormatter stays for text)."""
    for handler in logger.handlers if logger is not None else ():
        logs.install(handler, resources.settings().log_format, text_format=None)


@celeryd_init.connect
def check_configuration(sender: str | None = None, **_kwargs: Any) -> None:
    if sender:
        resources.set_node_name(sender)
    try:
        resources.failpoints()  # IAAS_FAILPOINTS
        parse_actions(resources.settings().reconcile_actions)  # IAAS_RECONCILE_ACTIONS
    except ValueError as exc:
        raise SystemExit(f"mini-iaas worker: bad configuration: {exc}") from exc


@worker_ready.connect
def serve_metrics(**_kwargs: Any) -> None:
    settings = resources.settings()
    metrics.serve(settings.worker_metrics_port, settings.metrics_address, "worker")


@worker_ready.connect
def take_over_earlier_incarnation(sender: Any = None, **_kwargs: Any) -> None:
    app: Celery = sender.app
    node = resources.node_name()
    settings = resources.settings()
    in_transaction(
        resources.sessions(),
        settings.db_retry_s,
        lambda session: hosts.register(session, settings.host, node),
    )
    freed = in_transaction(
        resources.sessions(),
        settings.db_retry_s,
        lambda session: lifecycle.take_over(session, node, resources.INCARNATION),
    )
    if not freed:
        return
    log.warning(
        "took over %d tasks that an earlier incarnation of %s left running: %s",
        len(freed), node, [str(task_id) for task_id in freed],
    )  # fmt: skip
    resend_unqueued(app, resources.sessions(), grace_s=0, only=freed)
