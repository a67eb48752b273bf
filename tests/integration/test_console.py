"""GET /v1/vms/<id>/console: the end of a VM's serial console log, read by the worker of the VM's host
(a real `celery worker` on libvirt's test driver, asked by remote control) and answered as text.

The test driver runs no guest, so the tests write the log themselves where the worker's settings say
virtlogd would: `IAAS_CONSOLE_LOG_DIR/<vm id>.log`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api import create_app
from common import hosts
from common.db import transaction
from common.tokens import Role
from tests.integration.helpers import delete_every_live_vm, running_vm, vm_body, wait_for_task
from tests.support.processes import WorkerProcess
from tests.support.tokens import api_client

KIB = 1024
MIB = 1024 * KIB


@pytest.fixture
def host_worker(worker: WorkerProcess, client: FlaskClient, sessions: Any) -> Iterator[WorkerProcess]:
    """The session's worker, recorded as its host's (another test may have started a worker of its own
    on the same host since, which recorded its node name). Afterwards the test's VMs are deleted
    through the API, and the hypervisor must hold nothing of them."""

    def record() -> None:
        with transaction(sessions) as session:
            hosts.register(session, worker.settings.host, worker.nodename)

    record()
    yield worker
    record()
    delete_every_live_vm(client, sessions, worker.inventory)


def write_log(worker: WorkerProcess, vm_id: str, data: bytes) -> Path:
    folder = Path(worker.settings.console_log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{vm_id}.log"
    path.write_bytes(data)
    return path


def vm_with_log(client: FlaskClient, worker: WorkerProcess, name: str, data: bytes) -> str:
    """A running VM, made through the API, whose console log holds `data`."""
    vm_id = running_vm(client, name)
    write_log(worker, vm_id, data)
    return vm_id


def console(client: FlaskClient, vm_id: str, query: str = "") -> TestResponse:
    return client.get(f"/v1/vms/{vm_id}/console{query}")


def lines(size: int) -> bytes:
    """`size` bytes of numbered lines, so that any slice of them is told apart from any other."""
    text = b"".join(b"boot line %08d\n" % n for n in range(size // 19 + 1))
    return text[:size]


def test_the_console_answers_the_end_of_the_log(client: FlaskClient, host_worker: WorkerProcess) -> None:
    log = lines(200 * KIB)
    vm_id = vm_with_log(client, host_worker, "console", log)

    default = console(client, vm_id)
    assert default.status_code == 200, default.get_json()
    assert default.content_type == "text/plain; charset=utf-8"
    assert default.get_data() == log[-64 * KIB :]  # 64 KiB unless asked
    assert default.headers["X-Console-Log-Size"] == str(len(log))
    assert default.headers["X-Console-Offset"] == str(len(log) - 64 * KIB)

    tail = console(client, vm_id, "?tail_bytes=100")
    assert tail.status_code == 200 and tail.get_data() == log[-100:]
    whole = console(client, vm_id, f"?tail_bytes={MIB}")  # more than there is: all of it
    assert whole.get_data() == log and whole.headers["X-Console-Offset"] == "0"


def test_at_most_one_mib_and_other_tail_sizes_are_400(
    client: FlaskClient, host_worker: WorkerProcess
) -> None:
    log = lines(MIB + 300 * KIB)
    vm_id = vm_with_log(client, host_worker, "console-big", log)

    capped = console(client, vm_id, f"?tail_bytes={MIB}")
    assert capped.status_code == 200 and capped.get_data() == log[-MIB:]
    for bad in (str(MIB + 1), "0", "-5", "lots", "1.5", ""):
        refused = console(client, vm_id, f"?tail_bytes={bad}")
        assert refused.status_code == 400, bad
        assert refused.get_json()["error"]["code"] == "invalid_request"
        assert refused.get_json()["error"]["details"]["fields"][0]["field"] == "tail_bytes"
    unknown = console(client, vm_id, "?lines=10")
    assert unknown.status_code == 400 and unknown.get_json()["error"]["code"] == "invalid_request"


def test_bytes_that_are_not_utf8_are_replaced(client: FlaskClient, host_worker: WorkerProcess) -> None:
    log = b"SeaBIOS \xff\xfe\x1b[2J\x00 caf\xc3\xa9 \xe2\x82\n"
    vm_id = vm_with_log(client, host_worker, "console-bytes", log)

    response = console(client, vm_id)
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "SeaBIOS \ufffd\ufffd\x1b[2J\x00 café \ufffd\n"
    # A tail that cuts a character in two starts with one replacement character, never a 500.
    cut = console(client, vm_id, "?tail_bytes=5")
    assert cut.status_code == 200 and cut.get_data(as_text=True) == "\ufffd \ufffd\n"


def test_a_vm_without_a_log_has_an_empty_console(client: FlaskClient, host_worker: WorkerProcess) -> None:
    vm_id = running_vm(client, "console-none")
    path = Path(host_worker.settings.console_log_dir) / f"{vm_id}.log"
    path.unlink(missing_ok=True)

    response = console(client, vm_id)
    assert response.status_code == 200 and response.get_data() == b""
    assert response.headers["X-Console-Log-Size"] == "0"
    assert response.content_type == "text/plain; charset=utf-8"


def test_a_stopped_vm_keeps_its_console_and_a_deleted_one_has_none(
    client: FlaskClient, host_worker: WorkerProcess
) -> None:
    vm_id = vm_with_log(client, host_worker, "console-stop", b"mini-iaas tiny guest: booted\n")
    stopped = client.post(f"/v1/vms/{vm_id}/stop", json={"force": True})
    assert wait_for_task(client, stopped.headers["Location"])["status"] == "succeeded"
    assert client.get(f"/v1/vms/{vm_id}").get_json()["status"] == "stopped"
    assert console(client, vm_id).get_data(as_text=True) == "mini-iaas tiny guest: booted\n"

    deleted = client.delete(f"/v1/vms/{vm_id}")
    assert wait_for_task(client, deleted.headers["Location"])["status"] == "succeeded"
    gone = console(client, vm_id)
    assert gone.status_code == 404 and gone.get_json()["error"]["code"] == "not_found"


def test_another_projects_vm_is_not_found_but_an_admin_reads_it(
    app: Flask, client: FlaskClient, host_worker: WorkerProcess
) -> None:
    vm_id = vm_with_log(client, host_worker, "console-scope", b"secret boot output\n")

    other = console(api_client(app, project="itest-other"), vm_id)
    assert other.status_code == 404 and other.get_json()["error"]["code"] == "not_found"
    assert b"secret" not in other.get_data()
    admin = console(api_client(app, project="itest-admins", role=Role.ADMIN), vm_id)
    assert admin.status_code == 200 and admin.get_data() == b"secret boot output\n"
    anonymous = app.test_client().get(f"/v1/vms/{vm_id}/console")
    assert anonymous.status_code == 401


@pytest.mark.usefixtures("idle_host")
def test_a_pending_vm_has_no_console_yet(client: FlaskClient) -> None:
    vm_id = client.post("/v1/vms", json=vm_body("console-pending")).get_json()["vm"]["id"]
    response = console(client, vm_id)
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "invalid_state"


def test_the_log_is_never_read_through_a_symbolic_link(
    client: FlaskClient, host_worker: WorkerProcess, tmp_path: Path
) -> None:
    vm_id = running_vm(client, "console-link")
    target = tmp_path / "not-a-console"
    target.write_text("private data\n")
    path = Path(host_worker.settings.console_log_dir) / f"{vm_id}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    os.symlink(target, path)

    response = console(client, vm_id)
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "internal_error"
    assert b"private data" not in response.get_data()


def test_no_answer_from_the_hosts_worker_is_503_within_the_timeout(
    client: FlaskClient, host_worker: WorkerProcess, sessions: Any
) -> None:
    vm_id = running_vm(client, "console-gone")
    with transaction(sessions) as session:  # the host's worker is now one that does not run
        hosts.register(session, host_worker.settings.host, "itest-gone@nowhere")
    quick = create_app(host_worker.settings.model_copy(update={"console_timeout_s": 1.0}))
    try:
        started = time.monotonic()
        response = console(api_client(quick), vm_id)
        elapsed = time.monotonic() - started
    finally:
        quick.extensions["iaas"].close()
    assert response.status_code == 503, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "host_unavailable" and "does not answer" in error["message"]
    assert error["details"]["host"] == host_worker.settings.host
    assert 1.0 <= elapsed < 4, elapsed
