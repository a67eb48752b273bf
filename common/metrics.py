"""Prometheus metrics shared by the processes: the state gauges computed at scrape time, and the small
HTTP server the worker and `iaas-events` expose their own metrics on.

The gauges (VMs by status, active tasks by kind and status, each host queue's depth) are read when
Prometheus scrapes, not kept up to date by every writer: three cheap reads (the live VMs and the
unfinished tasks each through their partial index, one Redis pipeline of LLENs), and never a count
that drifts from the database. The API serves them on `GET /metrics` (docs/operations.md#metrics)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from common import hosts
from common.models import Task, Vm
from common.queue import CONTROL_QUEUE, host_queue
from common.states import ACTIVE_TASK_STATUSES, TaskKind, VmStatus

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 1.0
LIVE_VM_STATUSES = [s for s in VmStatus if s != VmStatus.DELETED]


def _families() -> dict[str, GaugeMetricFamily]:
    return {
        "vms": GaugeMetricFamily(
            "iaas_vms", "Live VMs by status (deleted ones are not counted).", labels=["status"]
        ),
        "tasks": GaugeMetricFamily(
            "iaas_tasks_active",
            "Unfinished tasks by kind and status (pending or running).",
            labels=["kind", "status"],
        ),
        "queue": GaugeMetricFamily(
            "iaas_queue_messages",
            "Messages waiting in each host's queue and the control queue (Redis LLEN).",
            labels=["queue"],
        ),
        "up": GaugeMetricFamily(
            "iaas_state_source_up",
            "1 when this scrape could read the source (database, broker), else 0 and its gauges are missing.",
            labels=["source"],
        ),
    }


class StateCollector(Collector):
    """The gauges of what the database and the broker hold, read at each scrape."""

    def __init__(self, engine: Engine, broker_url: str) -> None:
        self._engine = engine
        self._broker_url = broker_url
        self._redis: redis.Redis | None = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The names without the reads (prometheus_client registers a collector by them)."""
        yield from _families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = _families()
        queues: list[str] = [CONTROL_QUEUE]
        try:
            with Session(self._engine) as session:
                vms = dict(session.execute(
                    select(Vm.status, func.count()).where(Vm.status != VmStatus.DELETED).group_by(Vm.status)
                ).all())  # fmt: skip
                tasks = {
                    (kind, status): count
                    for kind, status, count in session.execute(
                        select(Task.kind, Task.status, func.count())
                        .where(Task.status.in_(ACTIVE_TASK_STATUSES))
                        .group_by(Task.kind, Task.status)
                    )
                }
                queues += [host_queue(h) for h in hosts.known(session)]
        except Exception as exc:  # a scrape answers what it can: the database may be down
            log.warning("metrics: the database could not be read: %s", str(exc).splitlines()[0])
            families["up"].add_metric(["database"], 0)
        else:
            families["up"].add_metric(["database"], 1)
            for vm_status in LIVE_VM_STATUSES:  # zeros too: a series that vanishes reads as "no data"
                families["vms"].add_metric([vm_status], vms.get(vm_status, 0))
            for kind in TaskKind:
                for task_status in ACTIVE_TASK_STATUSES:
                    families["tasks"].add_metric([kind, task_status], tasks.get((kind, task_status), 0))
        try:
            pipeline = self._client().pipeline(transaction=False)
            for queue in queues:
                pipeline.llen(queue)
            depths = pipeline.execute()
        except redis.RedisError as exc:
            log.warning("metrics: the broker could not be read: %s", exc)
            families["up"].add_metric(["broker"], 0)
        else:
            families["up"].add_metric(["broker"], 1)
            for queue, depth in zip(queues, depths, strict=True):
                families["queue"].add_metric([queue], depth)
        yield from families.values()

    def _client(self) -> redis.Redis:
        if self._redis is None:  # made on first use: after gunicorn forked its workers
            self._redis = redis.Redis.from_url(
                self._broker_url, socket_connect_timeout=_PROBE_TIMEOUT_S, socket_timeout=_PROBE_TIMEOUT_S
            )
        return self._redis

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


def serve(port: int, address: str, what: str) -> bool:
    """Serve this process's metrics on address:port (0: off) from a daemon thread. A port that is
    taken is logged, not fatal: a worker without metrics still does its work."""
    if not port:
        return False
    try:
        start_http_server(port, addr=address)
    except OSError as exc:
        log.error("%s metrics: cannot listen on %s:%d (%s); running without them", what, address, port, exc)
        return False
    log.info("%s metrics on http://%s:%d/metrics", what, address, port)
    return True
