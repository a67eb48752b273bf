"""Task history: GET /v1/tasks (the project's, filtered, newest first, paged like GET /v1/vms) and
GET /v1/vms/<id>/tasks (a VM's, also after it is deleted), and the VM's `latest_task_id`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from common.tokens import Role
from tests.integration.helpers import vm_body
from tests.support.polling import poll
from tests.support.tokens import api_client

pytestmark = pytest.mark.usefixtures("idle_host")  # no worker: VMs stay pending, tasks stay queued


def create(client: FlaskClient, name: str) -> dict[str, Any]:
    response = client.post("/v1/vms", json=vm_body(name))
    assert response.status_code == 202, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def every_page(client: FlaskClient, path: str, limit: int) -> Iterator[list[dict[str, Any]]]:
    cursor = None
    while True:
        query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = client.get(path, query_string=query)
        assert page.status_code == 200, page.get_json()
        body = page.get_json()
        yield body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return


def test_the_projects_tasks_newest_first_in_pages(client: FlaskClient) -> None:
    made = [create(client, f"hist-{n}")["task"]["id"] for n in range(5)]
    every_mark = lambda: all(t["queued_at"] for t in client.get("/v1/tasks").get_json()["items"]) or None  # noqa: E731
    poll(every_mark, timeout=10, what="the queued_at marks")  # written off the request path
    pages = list(every_page(client, "/v1/tasks", limit=2))
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [task["id"] for page in pages for task in page] == made[::-1]
    first = client.get(f"/v1/tasks/{made[-1]}").get_json()
    assert pages[0][0] == first  # each item as GET /v1/tasks/<id> shows it, version included


def test_filters_by_vm_kind_and_status(client: FlaskClient) -> None:
    one, two = create(client, "filter-1"), create(client, "filter-2")
    deleted = client.delete(f"/v1/vms/{one['vm']['id']}")  # pending: the create is cancelled at once
    assert deleted.status_code == 202
    destroy_id = deleted.get_json()["task"]["id"]

    def ids(**query: str) -> list[str]:
        return [task["id"] for task in client.get("/v1/tasks", query_string=query).get_json()["items"]]

    assert ids(vm_id=one["vm"]["id"]) == [destroy_id, one["task"]["id"]]
    assert ids(kind="destroy_vm") == [destroy_id]
    assert ids(status="pending") == [two["task"]["id"]]
    assert ids(status="failed", kind="create_vm") == [one["task"]["id"]]
    assert ids(vm_id=str(uuid.uuid4())) == []
    for bad in ({"kind": "nope"}, {"status": "done"}, {"vm_id": "x"}, {"limit": "0"}, {"cursor": "!"}):
        response = client.get("/v1/tasks", query_string=bad)
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_request"


def test_scoped_to_the_project_and_every_project_for_admins(app: Flask) -> None:
    alice, bob = api_client(app, "alice"), api_client(app, "bob")
    admin = api_client(app, "ops", Role.ADMIN)
    a_task, b_task = create(alice, "a-vm")["task"]["id"], create(bob, "b-vm")["task"]["id"]
    assert [task["id"] for task in alice.get("/v1/tasks").get_json()["items"]] == [a_task]
    assert bob.get(f"/v1/tasks?vm_id={create(alice, 'a-vm-2')['vm']['id']}").get_json()["items"] == []
    refused = bob.get("/v1/tasks?all_projects=true")
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    assert admin.get("/v1/tasks").get_json()["items"] == []  # an admin's own project has none
    every = {task["id"] for task in admin.get("/v1/tasks?all_projects=true").get_json()["items"]}
    assert {a_task, b_task} <= every


def test_a_vms_tasks_outlive_it(app: Flask, client: FlaskClient) -> None:
    made = create(client, "gone-soon")
    vm_id = made["vm"]["id"]
    deleted = client.delete(f"/v1/vms/{vm_id}")
    assert deleted.status_code == 202 and deleted.get_json()["vm"]["status"] == "deleted"
    assert client.get(f"/v1/vms/{vm_id}").status_code == 404
    history = client.get(f"/v1/vms/{vm_id}/tasks")
    assert history.status_code == 200
    kinds = [(task["kind"], task["status"]) for task in history.get_json()["items"]]
    assert kinds == [("destroy_vm", "succeeded"), ("create_vm", "failed")]
    only_creates = client.get(f"/v1/vms/{vm_id}/tasks?kind=create_vm").get_json()["items"]
    assert [task["id"] for task in only_creates] == [made["task"]["id"]]

    # Another project's VM is not found, exactly as an id nobody has.
    bob, nobodys = api_client(app, "bob"), str(uuid.uuid4())
    seen = bob.get(f"/v1/vms/{vm_id}/tasks")
    assert seen.status_code == 404
    assert seen.get_data(as_text=True).replace(vm_id, nobodys) == bob.get(
        f"/v1/vms/{nobodys}/tasks"
    ).get_data(as_text=True)
    assert api_client(app, "ops", Role.ADMIN).get(f"/v1/vms/{vm_id}/tasks").status_code == 200


def test_a_vm_shows_its_latest_task(client: FlaskClient) -> None:
    made = create(client, "latest")
    vm_id, task_id = made["vm"]["id"], made["task"]["id"]
    assert made["vm"]["latest_task_id"] == task_id  # the 202 knows it without a read
    assert client.get(f"/v1/vms/{vm_id}").get_json()["latest_task_id"] == task_id
    [listed] = client.get("/v1/vms").get_json()["items"]
    assert listed["latest_task_id"] == task_id


def test_listing_vms_reads_their_latest_tasks_without_a_query_each(app: Flask, client: FlaskClient) -> None:
    def statements_of_a_listing() -> int:
        count = 0

        def counted(*_args: Any) -> None:
            nonlocal count
            count += 1

        engine = app.extensions["iaas"].engine
        event.listen(engine, "before_cursor_execute", counted)
        try:
            assert client.get("/v1/vms").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", counted)
        return count

    create(client, "n-plus-1")
    one = statements_of_a_listing()
    for n in range(5):
        create(client, f"n-plus-1-{n}")
    assert statements_of_a_listing() == one
    assert all(vm["latest_task_id"] for vm in client.get("/v1/vms").get_json()["items"])
