"""What an operator reads tells the truth, with a real worker: the API's /metrics and the worker's
metrics move with the work; Celery's own events say FAILURE for a failed task and name its VM; the
worker's log lines name the task they were written for; iaas-events measures its lag."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from common.config import Settings
from common.queue import make_celery
from common.states import PowerState
from tests.integration.helpers import vm_body, wait_for_task
from tests.support.polling import poll
from tests.support.processes import WorkerProcess
from worker.events.listener import PowerEvent, Writer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def api_metrics(app: Flask) -> Samples:
    response = app.test_client().get("/metrics")  # no token: scrapes carry none
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    return parse(response.get_data(as_text=True))


def worker_metrics(worker: WorkerProcess) -> Samples:
    assert worker.metrics_port, "the session's worker serves its metrics"
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5) as answer:
        return parse(answer.read().decode())


def create(client: FlaskClient, name: str) -> tuple[str, dict[str, Any]]:
    response = client.post("/v1/vms", json=vm_body(name))
    assert response.status_code == 202, response.get_json()
    return response.get_json()["vm"]["id"], wait_for_task(client, response.headers["Location"])


def test_metrics_answer_and_move_after_a_create(
    app: Flask, client: FlaskClient, worker: WorkerProcess, settings: Settings
) -> None:
    before, worker_before = api_metrics(app), worker_metrics(worker)
    assert value(before, "iaas_state_source_up", source="database") == 1
    assert value(before, "iaas_state_source_up", source="broker") == 1
    assert ("iaas_queue_messages", frozenset({("queue", f"host.{settings.host}")})) in before
    assert value(before, "iaas_vms", status="running") == 0

    vm_id, task = create(client, "metered")
    assert task["status"] == "succeeded", task["error"]

    after = api_metrics(app)
    posted = {"method": "POST", "route": "/v1/vms", "status": "202"}
    assert (
        value(after, "iaas_api_requests_total", **posted)
        == value(before, "iaas_api_requests_total", **posted) + 1
    )
    polled = {"method": "GET", "route": "/v1/tasks/<uuid:task_id>"}
    assert value(after, "iaas_api_request_duration_seconds_count", **polled) >= 1
    assert value(after, "iaas_vms", status="running") == 1
    assert value(after, "iaas_tasks_active", kind="create_vm", status="running") == 0

    def worker_counted() -> Samples | None:  # the worker counts just after it records the task
        samples = worker_metrics(worker)
        runs = {"kind": "create_vm", "result": "succeeded"}
        return (
            samples
            if value(samples, "iaas_task_runs_total", **runs)
            > value(worker_before, "iaas_task_runs_total", **runs)
            else None
        )

    samples = poll(worker_counted, timeout=10, what="the worker to count the create")
    step = {"kind": "create_vm", "step": "define_domain", "outcome": "succeeded"}
    assert value(samples, "iaas_saga_step_duration_seconds_count", **step) > value(
        worker_before, "iaas_saga_step_duration_seconds_count", **step
    )
    assert value(samples, "iaas_saga_duration_seconds_count", kind="create_vm", outcome="succeeded") >= 1
    assert (
        wait_for_task(client, client.delete(f"/v1/vms/{vm_id}").headers["Location"])["status"] == "succeeded"
    )


@contextmanager
def celery_events(settings: Settings) -> Iterator[list[dict[str, Any]]]:
    """Celery's event stream, as Flower reads it, collected from the moment a worker is heard."""
    celery = make_celery(settings)
    seen: list[dict[str, Any]] = []
    connection = celery.connection_for_read()
    receiver = celery.events.Receiver(connection, handlers={"*": seen.append})
    thread = threading.Thread(target=receiver.capture, kwargs={"wakeup": True}, name="events", daemon=True)
    thread.start()
    try:
        poll(lambda: True if seen else None, timeout=15, what="a first Celery event (a worker heartbeat)")
        yield seen
    finally:
        receiver.should_stop = True
        thread.join(timeout=5)
        connection.release()
        celery.close()


def events_of(seen: list[dict[str, Any]], task_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in list(seen) if e.get("uuid") == task_id and e["type"] == kind]


def test_a_failed_create_is_a_celery_failure_and_names_its_vm(
    client: FlaskClient, worker: WorkerProcess, settings: Settings, failpoint: Callable[[str, str], None]
) -> None:
    with celery_events(settings) as seen:
        failpoint("create_vm.start_domain", "raise")
        vm_id, task = create(client, "doomed")
        assert task["status"] == "failed" and task["error"]["code"] == "step_failed"
        [failed] = poll(
            lambda: events_of(seen, task["id"], "task-failed") or None,
            timeout=15,
            what="Celery's task-failed",
        )
        assert failed["exception"].startswith("TaskFailed('step_failed', ")
        [received] = events_of(seen, task["id"], "task-received")
        assert vm_id in received["args"] and f"host={settings.host}" in received["args"]

        failpoint("create_vm.start_domain", "off")
        ok_vm, ok = create(client, "fine")
        assert ok["status"] == "succeeded"
        poll(lambda: events_of(seen, ok["id"], "task-succeeded") or None, timeout=15, what="task-succeeded")
        # The failure was acknowledged, not retried or redelivered: still one delivery of it.
        assert len(events_of(seen, task["id"], "task-received")) == 1
        assert not events_of(seen, task["id"], "task-retried")

    log = worker.log_path.read_text()
    tagged = [line for line in log.splitlines() if f"[task={task['id']} kind=create_vm vm={vm_id}]" in line]
    assert any("step start_domain failed" in line for line in tagged), "the saga's warning names its task"
    assert f"[{task['id']}] raised expected: TaskFailed('step_failed', " in log
    for gone in (vm_id, ok_vm):
        assert (
            wait_for_task(client, client.delete(f"/v1/vms/{gone}").headers["Location"])["status"]
            == "succeeded"
        )


def test_the_listener_measures_event_to_database_lag(sessions: Any) -> None:
    def observed() -> float:
        return REGISTRY.get_sample_value("iaas_event_db_lag_seconds_count") or 0.0

    before = observed()
    writer = Writer(sessions, retry_s=5)
    writer.queue.put(PowerEvent(uuid.uuid4(), PowerState.SHUTOFF, time.monotonic()))
    writer.queue.put(None)
    writer.run()
    assert observed() == before + 1
    assert (REGISTRY.get_sample_value("iaas_event_db_lag_seconds_sum") or 0.0) < 5
