"""Bad input gets a 4xx in the error envelope and writes nothing; the API needs no worker."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from api.views.vms import CREATE_BODY_BYTES
from common.config import Settings
from common.db import transaction
from common.models import Image, Task, TaskStep, Vm
from common.tokens import Role
from tests.integration.helpers import vm_body
from tests.support.tokens import api_client
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
    del body[
        "image"
    ]  # (a missing size is told by the rule on flavor or sizes: tests/integration/test_flavors.py)
    body["colour"] = "blue"
    error = assert_error(client.post("/v1/vms", json=body), 400, "invalid_request")
    assert sorted(f["field"] for f in error["details"]["fields"]) == ["colour", "image"]
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
    # A create has room for 64 KiB of user-data however it is escaped (api/views/vms.py); others 64 KiB.
    response = client.post("/v1/vms", json=vm_body(padding="x" * (CREATE_BODY_BYTES + 1)))
    assert_error(response, 413, "request_entity_too_large")
    response = client.post("/v1/keypairs", json={"name": "k", "public_key": "x" * 100_000})
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
    assert error["details"] == {"task_id": created["task"]["id"], "kind": "create_vm", "status": "running"}
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


# Hostile input: whatever arrives, the answer is a 4xx in the envelope and nothing is written.

VM_ID = "5f0c9d3e-2b1a-4c8e-9f7d-6a5b4c3d2e1f"
BODY_PATHS = [
    "/v1/vms", f"/v1/vms/{VM_ID}/start", f"/v1/vms/{VM_ID}/stop", f"/v1/vms/{VM_ID}/reboot",
    "/v1/actions/reconcile",
]  # fmt: skip
DEEP_BODIES = [
    "[" * 3000 + "]" * 3000,
    '{"a":' * 1000 + "1" + "}" * 1000,
    '{"name": ' + "[" * 33 + "]" * 33 + "}",
]


@pytest.mark.parametrize("path", BODY_PATHS)
@pytest.mark.parametrize("body", DEEP_BODIES, ids=["arrays", "objects", "just-too-deep"])
def test_deeply_nested_json_is_400(
    client: FlaskClient, app: Flask, sessions: Any, path: str, body: str
) -> None:
    caller = api_client(app, role=Role.ADMIN) if path.startswith("/v1/actions") else client  # admins only
    error = assert_error(caller.post(path, data=body, content_type="application/json"), 400, "invalid_json")
    assert "limited to 32 levels" in error["message"]
    assert error["details"] == {"max_depth": 32}
    assert row_counts(sessions) == (0, 0, 0)


def test_nesting_up_to_the_limit_is_parsed(client: FlaskClient, sessions: Any) -> None:
    body = '{"name": ' + "[" * 31 + "]" * 31 + "}"  # 32 levels: read, then refused by the schema
    error = assert_error(
        client.post("/v1/vms", data=body, content_type="application/json"), 400, "invalid_request"
    )
    assert "name" in [field["field"] for field in error["details"]["fields"]]
    brackets_in_strings = vm_body(name="x" * 70 + "[" * 100 + "{" * 100)  # text, not nesting
    error = assert_error(client.post("/v1/vms", json=brackets_in_strings), 400, "invalid_request")
    assert [field["field"] for field in error["details"]["fields"]] == ["name"]
    assert row_counts(sessions) == (0, 0, 0)


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "\xff"}',
        b"\xfe\xff\x00{",
        '{"name": "web-1"}'.encode("utf-16-le")[:-1],
        b"{" + b"1" * 5000 + b"}",
    ],
    ids=["not-utf8", "bad-bom", "odd-utf16", "not-json"],
)
def test_bodies_that_are_not_json_text_are_400(client: FlaskClient, sessions: Any, body: bytes) -> None:
    assert_error(client.post("/v1/vms", data=body, content_type="application/json"), 400, "invalid_json")
    assert row_counts(sessions) == (0, 0, 0)


def test_utf16_json_is_read_as_json_loads_reads_it(client: FlaskClient, sessions: Any) -> None:
    body = json.dumps(vm_body("wide")).encode("utf-16")
    assert client.post("/v1/vms", data=body, content_type="application/json").status_code == 202
    assert row_counts(sessions) == (1, 1, 0)


@pytest.mark.parametrize("body", ["null", '"web-1"', "1", "true", "[]", '{"vcpus": ' + "9" * 5000 + "}"])
def test_json_that_is_not_an_object_of_fields_is_400(client: FlaskClient, sessions: Any, body: str) -> None:
    response = client.post("/v1/vms", data=body, content_type="application/json")
    assert response.status_code == 400 and response.get_json()["error"]["code"] in (
        "invalid_request",
        "invalid_json",
    )
    assert row_counts(sessions) == (0, 0, 0)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json",
        "",
        "application/jsonx",
        ";;;",
    ],
)
def test_bodies_not_sent_as_json_are_415(client: FlaskClient, sessions: Any, content_type: str) -> None:
    response = client.post("/v1/vms", data=json.dumps(vm_body()), headers={"Content-Type": content_type})
    assert_error(response, 415, "unsupported_media_type")
    assert row_counts(sessions) == (0, 0, 0)


def test_json_media_types_and_parameters_are_read_as_json(client: FlaskClient, sessions: Any) -> None:
    for name, content_type in [
        ("a", "application/json; charset=latin-1"),
        ("b", "application/merge-patch+json"),
    ]:
        response = client.post(
            "/v1/vms", data=json.dumps(vm_body(name)), headers={"Content-Type": content_type}
        )
        assert response.status_code == 202, response.get_data(as_text=True)
    assert row_counts(sessions) == (2, 2, 0)


def cursor_of(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


GOOD_TIME = "2026-01-02T03:04:05.123456+00:00"
BAD_CURSORS = {
    "id-int": cursor_of([GOOD_TIME, 5]),
    "id-list": cursor_of([GOOD_TIME, [VM_ID]]),
    "id-bool": cursor_of([GOOD_TIME, True]),
    "id-null": cursor_of([GOOD_TIME, None]),
    "id-not-uuid": cursor_of([GOOD_TIME, "nope"]),
    "time-int": cursor_of([1767322800, VM_ID]),
    "time-offset-16h": cursor_of(["2026-01-02T03:04:05+16:00", VM_ID]),
    "time-offset-minus-16h": cursor_of(["2026-01-02T03:04:05-16:00", VM_ID]),
    "time-offset-23h59": cursor_of(["2026-01-02T03:04:05+23:59", VM_ID]),
    "time-naive": cursor_of(["2026-01-02T03:04:05", VM_ID]),
    "time-date-only": cursor_of(["2026-01-02", VM_ID]),
    "time-year-1-east": cursor_of(["0001-01-01T00:00:00+15:00", VM_ID]),
    "time-year-9999-west": cursor_of(["9999-12-31T23:59:59-15:00", VM_ID]),
    "time-garbage": cursor_of(["yesterday", VM_ID]),
    "object": cursor_of({"at": GOOD_TIME, "id": VM_ID}),
    "object-two-keys": cursor_of({GOOD_TIME: 1, VM_ID: 2}),
    "two-char-string": cursor_of("ab"),
    "number": cursor_of(10**100),
    "huge-number": cursor_of(b"9" * 140),
    "null": cursor_of(None),
    "empty-list": cursor_of([]),
    "one-item": cursor_of([GOOD_TIME]),
    "three-items": cursor_of([GOOD_TIME, VM_ID, VM_ID]),
    "not-utf8": cursor_of(b'["\xff", "\xfe"]'),
    "not-json": cursor_of(b"[2026-01-02, x]"),
    "not-base64": "%%%",
    "non-ascii": "é",
    "empty": "",
}


@pytest.mark.parametrize("cursor", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
def test_malformed_cursors_are_400(client: FlaskClient, cursor: str) -> None:
    error = assert_error(client.get("/v1/vms", query_string={"cursor": cursor}), 400, "invalid_request")
    assert error["details"] == {"cursor": cursor}


def test_a_cursor_at_an_offset_postgresql_gives_pages_on(client: FlaskClient) -> None:
    ids = [client.post("/v1/vms", json=vm_body(f"vm-{i}")).get_json()["vm"]["id"] for i in range(2)]
    first = client.get("/v1/vms?limit=1").get_json()
    at, row_id = json.loads(base64.urlsafe_b64decode(first["next_cursor"] + "=="))
    shifted = datetime.fromisoformat(at).astimezone(timezone(timedelta(hours=15, minutes=59)))
    page = client.get("/v1/vms", query_string={"cursor": cursor_of([shifted.isoformat(), row_id])})
    assert [vm["id"] for vm in page.get_json()["items"]] == ids[1:]


@pytest.mark.parametrize("key", ["", "é", "tab\there", "nul\x00", "del\x7f", "k" * 256])
@pytest.mark.parametrize("method_path", [("POST", "/v1/vms"), ("DELETE", f"/v1/vms/{VM_ID}")])
def test_malformed_idempotency_keys_are_400(
    client: FlaskClient, sessions: Any, key: str, method_path: tuple[str, str]
) -> None:
    method, path = method_path
    response = client.open(path, method=method, json=vm_body(), headers={"Idempotency-Key": key})
    error = assert_error(response, 400, "invalid_request")
    assert "Idempotency-Key" in error["message"]
    assert row_counts(sessions) == (0, 0, 0)


@pytest.mark.parametrize(
    "query",
    ["limit=" + "9" * 5000, "limit=1e3", "limit=-1", "limit=%00", "name=%00", "name=%FF", "status=%00",
     "name=" + "a" * 5000, "cursor=" + "A" * 201],
)  # fmt: skip
def test_hostile_list_queries_are_400(client: FlaskClient, query: str) -> None:
    assert_error(client.get(f"/v1/vms?{query}"), 400, "invalid_request")


@pytest.mark.parametrize("path", ["/v1/vms/%FF", "/v1/vms/%00", "/v1/tasks/" + "f" * 5000, "/v1/vms/1/start"])
def test_hostile_path_params_are_404(client: FlaskClient, path: str) -> None:
    assert_error(client.get(path), 404, "not_found")


def test_a_405_says_which_methods_the_path_takes(client: FlaskClient) -> None:
    response = client.put("/v1/vms")
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}
    assert response.mimetype == "application/json"
