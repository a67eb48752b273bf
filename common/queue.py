"""Every Celery setting in one place, shared by the API (which only sends) and the worker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu import Queue

from common.config import Settings
from common.states import TaskKind

# Celery task names, fixed strings so the API can send without importing the worker (or libvirt).
TASK_NAMES: dict[str, str] = {
    TaskKind.CREATE_VM: "iaas.create_vm",
    TaskKind.DESTROY_VM: "iaas.destroy_vm",
    TaskKind.START_VM: "iaas.start_vm",
    TaskKind.STOP_VM: "iaas.stop_vm",
    TaskKind.REBOOT_VM: "iaas.reboot_vm",
    TaskKind.RECONCILE: "iaas.reconcile",
}
SWEEP = "iaas.sweep"
# Sent to every host's queue once a network's delete is committed (common/networks.network_deleted),
# with the network's id: the host's worker removes its libvirt network, if it has one.
REMOVE_NETWORK = "iaas.remove_network"
# Every worker also consumes this queue: work that needs no particular hypervisor (the sweeps), so
# it runs as long as any worker lives.
CONTROL_QUEUE = "iaas.control"


def host_queue(host: str) -> str:
    """Work for a VM goes to the queue of the host that owns it; one worker consumes each."""
    return f"host.{host}"


def celery_settings(settings: Settings) -> dict[str, Any]:
    queue = host_queue(settings.host)
    return {
        "broker_url": settings.broker_url,
        # PostgreSQL holds task status; results in Redis would expire and read as PENDING when unknown.
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "timezone": "UTC",
        # A message is acknowledged only after the task body returns, so a worker that dies mid-task
        # leaves it to be redelivered; the saga journal makes the second run find the first one's work.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Redis redelivers unacknowledged messages after this long: longer than the longest task.
        # (The lease sweep recovers a killed worker's task much sooner; this is the broker's own net.)
        "broker_transport_options": {"visibility_timeout": settings.task_deadline_s * 2},
        "broker_connection_retry_on_startup": True,
        "task_default_queue": queue,
        "task_queues": [Queue(queue), Queue(CONTROL_QUEUE)],
        "worker_concurrency": settings.worker_concurrency,
        "worker_send_task_events": True,  # Flower shows live task progress from these
        # No "sent" event per publish: one Redis PUBLISH less on the API's accept path. Flower still
        # shows each task from the moment a worker receives it.
        "task_send_sent_event": False,
        "beat_schedule": {
            **{
                f"reconcile-{host}": {
                    "task": TASK_NAMES[TaskKind.RECONCILE],
                    "schedule": float(settings.reconcile_interval_s),
                    "args": (None,),
                    "options": {"queue": host_queue(host), "expires": float(settings.reconcile_interval_s)},
                }
                for host in settings.host_list
            },
            "sweep": {
                "task": SWEEP,
                "schedule": settings.sweep_interval_s,
                "options": {"queue": CONTROL_QUEUE, "expires": settings.sweep_interval_s},
            },
        },
    }


def make_celery(settings: Settings, include: Sequence[str] = ()) -> Celery:
    app = Celery("mini-iaas", include=list(include))
    app.conf.update(celery_settings(settings))
    return app
