"""Bad input gets a 4xx in the error envelope and writes nothing; the API needs no worker."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from common.config import Settings
from common.db import transaction
from common.models import Image, Task, TaskStep, Vm
from tests.integration.helpers import vm_body
from worker.sagas.runner import claim


def row_counts(sessions: Any) -> tuple[int, int, int]:
    with sessions() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model)) for model in (Vm, Task, TaskStep)
        )  # type: ignore[return-value]


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]


pytestmark = pytest.mark.usefixtures("idle_host")


BAD_NAMES = [
    "", "A", "Web", "../etc", "a/b", "a\\b", "..", "a.b", "<x>", "a&b", "a\"b", "a'b", "-a", "a-",
    "a b", "x" * 64, "ünï", "a\x00b", "a\nb",
]  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_that_are_not_dns_labels_are_rejected(client: FlaskClient, sessions: Any, name: str) -> None:
    before = row_counts(sessions)
    error = assert_error(client.post("/v1/vms", json=vm_body(name)), 400, "invalid_request")
    assert error["details"]["fields"][0]["field"] == "name"
    assert row_counts(sessions) == before == (0, 0, 0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vcpus", 0), ("vcpus", 10_000), ("vcpus", -1), ("vcpus", "2"), ("vcpus", 1.5), ("vcpus", True),
        ("memory_mib", 1), ("memory_mib", 10**12), ("memory_mib", None),
        ("disk_gib", 0), ("disk_gib", 10**9), ("disk_gib", "big"),
        ("image", 5), ("image", "../tiny"),
    ],
)  # fmt: skip
def test_absurd_or_mistyped_fields_are_rejected(
    client: FlaskClient, sessions: Any, field: str, value: Any
) -> None:
    error = assert_error(client.post("/v1/vms", json=vm_body(**{field: value})), 400, "invalid_request")
    assert [f["field"] for f in error["details"]["fields"]] == [field]
    assert row_counts(sessions) == (0, 0, 0)


def test_missing_and_unknown_fields_are_named(client: FlaskClient, sessions: Any) -> None:
    body = vm_body()
    del body["vcpus"]
    body["colour"] = "blue"
    error = assert_error(client.post("/v1/vms", json=body), 400, "invalid_request")
    assert sorted(f["field"] for f in error["details"]["fields"]) == ["colour", "vcpus"]
    assert row_counts(sessions) == (0, 0, 0)


def test_invalid_json_is_400(client: FlaskClient, sessions: Any) -> None:
    response = client.post("/v1/vms", data='{"name": "x",', content_type="application/json")
    assert_error(response, 400, "invalid_json")
    assert_error(client.post("/v1/vms", json=["a", "list"]), 400, "invalid_request")
    assert row_counts(sessions) == (0, 0, 0)


def test_body_that_is_not_json_is_415(client: FlaskClient, sessions: Any) -> None:
    assert_error(
        client.post("/v1/vms", data="name=x", content_type="text/plain"), 415, "unsupported_media_type"
    )
    assert row_counts(sessions) == (0, 0, 0)


def test_oversized_body_is_413(client: FlaskClient, sessions: Any) -> None:
    response = client.post("/v1/vms", json=vm_body(padding="x" * 100_000))
    assert_error(response, 413, "request_entity_too_large")
    assert row_counts(sessions) == (0, 0, 0)


def test_unknown_image_is_400(client: FlaskClient, sessions: Any) -> None:
    error = assert_error(client.post("/v1/vms", json=vm_body(image="nope")), 400, "unknown_image")
    assert error["details"] == {"image": "nope"}
    assert row_counts(sessions) == (0, 0, 0)


def test_disk_smaller_than_the_image_is_400(client: FlaskClient, sessions: Any) -> None:
    with transaction(sessions) as session:
        session.execute(update(Image).values(virtual_size_bytes=3 * 1024**3 + 1))
    error = assert_error(client.post("/v1/vms", json=vm_body(disk_gib=3)), 400, "disk_too_small")
    assert error["details"] == {"minimum_disk_gib": 4}
    assert row_counts(sessions) == (0, 0, 0)


def test_create_answers_202_without_any_worker(client: FlaskClient, sessions: Any) -> None:
    response = client.post("/v1/vms", json=vm_body())
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"] == f"/v1/tasks/{body['task']['id']}"
    assert body["vm"]["status"] == "pending" and body["vm"]["power_state"] == "unknown"
    assert body["task"]["kind"] == "create_vm" and body["task"]["status"] == "pending"
    assert body["task"]["vm_id"] == body["vm"]["id"]
    assert body["task"]["queued_at"] is not None  # handed to Redis after the commit
    assert client.get(response.headers["Location"]).get_json()["status"] == "pending"
    assert row_counts(sessions) == (1, 1, 0)


def test_a_live_vms_name_is_409(client: FlaskClient, sessions: Any) -> None:
    assert client.post("/v1/vms", json=vm_body("dup")).status_code == 202
    error = assert_error(client.post("/v1/vms", json=vm_body("dup", vcpus=2)), 409, "name_taken")
    assert error["details"] == {"name": "dup"}
    assert row_counts(sessions) == (1, 1, 0)


def test_delete_before_any_worker_started_the_create_cancels_it(
    client: FlaskClient, sessions: Any, settings: Settings
) -> None:
    created = client.post("/v1/vms", json=vm_body("early")).get_json()
    vm_id = created["vm"]["id"]

    response = client.delete(f"/v1/vms/{vm_id}")

    assert response.status_code == 202
    body = response.get_json()
    assert body["vm"]["status"] == "deleted"
    assert body["task"]["kind"] == "destroy_vm" and body["task"]["status"] == "succeeded"
    assert body["task"]["result"] == {"vm_id": vm_id, "cancelled_task_id": created["task"]["id"]}
    assert body["task"]["queued_at"] is None  # finished already: nothing sent to a worker
    assert response.headers["Location"] == f"/v1/tasks/{body['task']['id']}"
    create = client.get(f"/v1/tasks/{created['task']['id']}").get_json()
    assert create["status"] == "failed" and create["error"]["code"] == "cancelled"
    assert create["error"]["details"] == {"destroy_task_id": body["task"]["id"]}
    assert_error(client.get(f"/v1/vms/{vm_id}"), 404, "not_found")
    assert client.post("/v1/vms", json=vm_body("early")).status_code == 202  # the name is free again
    # The create's message is still in its queue: a worker that takes it later finds nothing to claim.
    assert claim(sessions, settings, uuid.UUID(created["task"]["id"])) is None


def test_delete_once_a_worker_started_the_create_is_409_vm_busy(client: FlaskClient, sessions: Any) -> None:
    created = client.post("/v1/vms", json=vm_body()).get_json()
    with transaction(sessions) as session:  # what a worker's claim does to the row
        session.execute(
            update(Task)
            .where(Task.id == uuid.UUID(created["task"]["id"]))
            .values(status="running", attempts=Task.attempts + 1)
        )
    error = assert_error(client.delete(f"/v1/vms/{created['vm']['id']}"), 409, "vm_busy")
    assert error["details"] == {"task_id": created["task"]["id"]}
    assert client.get(f"/v1/vms/{created['vm']['id']}").get_json()["status"] == "pending"
    assert row_counts(sessions) == (1, 1, 0)


@pytest.mark.parametrize("path", ["/v1/vms/{id}", "/v1/tasks/{id}"])
def test_unknown_ids_are_404(client: FlaskClient, path: str) -> None:
    assert_error(client.get(path.format(id=uuid.uuid4())), 404, "not_found")
    assert_error(client.get(path.format(id="not-a-uuid")), 404, "not_found")


def test_delete_of_unknown_vm_is_404(client: FlaskClient, sessions: Any) -> None:
    assert_error(client.delete(f"/v1/vms/{uuid.uuid4()}"), 404, "not_found")
    assert row_counts(sessions) == (0, 0, 0)


def test_wrong_method_is_405_in_the_envelope(client: FlaskClient) -> None:
    assert_error(client.put("/v1/vms"), 405, "method_not_allowed")


def test_list_pages_with_a_cursor_and_filters(client: FlaskClient) -> None:
    created = [client.post("/v1/vms", json=vm_body(f"vm-{i}")).get_json()["vm"]["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/v1/vms?{query}").get_json()
        seen += [vm["id"] for vm in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == created  # oldest first, each exactly once
    assert [vm["name"] for vm in client.get("/v1/vms?name=vm-3").get_json()["items"]] == ["vm-3"]
    assert len(client.get("/v1/vms?status=pending").get_json()["items"]) == 5
    assert client.get("/v1/vms?status=running").get_json()["items"] == []


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=abc", "limit=100000", "status=bogus", "cursor=%%%", "sort=x"]
)
def test_bad_list_queries_are_400(client: FlaskClient, query: str) -> None:
    assert_error(client.get(f"/v1/vms?{query}"), 400, "invalid_request")


def test_images_are_listed(client: FlaskClient) -> None:
    items = client.get("/v1/images").get_json()["items"]
    assert [(i["name"], i["format"]) for i in items] == [("tiny", "qcow2")]


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "broker": "ok"}
