"""The OpenAPI document: a valid OpenAPI 3.1 document, describing exactly the routes Flask serves,
secured as the API is, and answered truly by the real app (the conformance test fuzzes the rest)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import OpenAPIV31SpecValidator
from pydantic import BaseModel

from api.openapi import responses as out
from api.openapi.document import document
from api.openapi.page import ASSETS
from api.openapi.routes import ROUTES
from common.tokens import Role
from tests.integration.helpers import vm_body, wait_for_task
from tests.support.processes import WorkerProcess
from tests.support.tokens import api_client

OPEN = {"/healthz", "/readyz", "/metrics", "/v1/openapi.json", "/v1/docs", "/v1/docs/{asset}"}
IMPLICIT = {"HEAD", "OPTIONS"}  # Flask answers these for every route


@pytest.fixture
def spec(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    OpenAPIV31SpecValidator(spec).validate()
    assert spec == document()  # what the conformance test loads without an app


def flask_operations(app: Flask) -> set[tuple[str, str, str]]:
    """(method, path in OpenAPI's form, endpoint) of every route Flask serves, but its static files."""
    return {
        (method, re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), rule.endpoint)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in IMPLICIT
    }


def test_the_document_has_every_route_flask_serves_and_no_other(app: Flask, spec: dict[str, Any]) -> None:
    served = flask_operations(app)
    documented = {
        (method.upper(), path, operation["operationId"])
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }
    assert {(m, p) for m, p, _ in served if p.startswith("/v1")} == {
        (m, p) for m, p, _ in documented if p.startswith("/v1")
    }
    assert {(m, p) for m, p, _ in served} == {(m, p) for m, p, _ in documented}
    assert {(r.method, r.path, r.endpoint) for r in ROUTES} == served  # the table names Flask's endpoints
    assert {(m, p, e.split(".")[1]) for m, p, e in served} == documented


def test_every_v1_operation_but_the_document_needs_a_bearer_token(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"] == {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A project's API token: `Bearer <token>`.",
        }
    }
    assert spec["security"] == [{"bearer": []}]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if path in OPEN:
                assert operation["security"] == [], (method, path)
                assert not {"401", "403"} & set(operation["responses"]), (method, path)
            else:
                assert "security" not in operation, (method, path)  # the document's default: bearer
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
                assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]["required"] is True


def refs_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        return (
            {value["$ref"]} if "$ref" in value else {ref for item in value.values() for ref in refs_in(item)}
        )
    if isinstance(value, list):
        return {ref for item in value for ref in refs_in(item)}
    return set()


@pytest.mark.parametrize("model", [out.Vm, out.Task, out.VmAccepted, out.ErrorResponse])
def test_schemas_are_pydantics_own_as_components(spec: dict[str, Any], model: type[BaseModel]) -> None:
    schemas = spec["components"]["schemas"]
    own = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in own.pop("$defs", {}).items():
        assert schemas[name] == schema
    assert schemas[model.__name__] == own


def test_every_reference_is_to_a_component(spec: dict[str, Any]) -> None:
    refs = refs_in(spec)
    assert refs and all(ref.startswith("#/components/schemas/") for ref in refs)
    assert {ref.rsplit("/", 1)[1] for ref in refs} == set(spec["components"]["schemas"])  # none unused


def test_the_docs_page_loads_nothing_from_elsewhere(client: FlaskClient) -> None:
    page = client.get("/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "//" not in re.sub(r"<script>.*?</script>", "", html, flags=re.S)  # no http://, https://, //host
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assets = re.findall(r'(?:href|src)="([^"]+)"', html)
    assert len(assets) == 3
    for url in assets:
        with client.get(url) as asset:
            assert asset.status_code == 200 and asset.get_data(), url
            assert asset.mimetype == ASSETS[url.rsplit("/", 1)[1]]
    assert '"/v1/openapi.json"' in html
    missing = client.get("/v1/docs/index.html")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"


def answers(model: type[BaseModel], response: Any) -> Any:
    return model.model_validate_json(response.get_data())


def test_real_answers_validate_against_the_response_models(
    client: FlaskClient, app: Flask, worker: WorkerProcess
) -> None:
    """What the worker writes (steps, results, errors) shown through GET /v1/tasks/<id> (api/task_reads.py,
    the one answer not made by api/presenters.py) as well as the presenters' answers."""
    created = client.post("/v1/vms", json=vm_body("doc-1"))
    vm = answers(out.VmAccepted, created).vm
    task = answers(out.Task, client.get(created.headers["Location"]))
    assert task.id == answers(out.VmAccepted, created).task.id
    wait_for_task(client, created.headers["Location"])
    done = answers(out.Task, client.get(created.headers["Location"]))
    assert done.status == "succeeded" and done.steps and done.result == {"vm_id": str(vm.id)}
    assert answers(out.Vm, client.get(f"/v1/vms/{vm.id}")).power_state == "running"
    assert [v.id for v in answers(out.VmPage, client.get("/v1/vms")).items] == [vm.id]
    assert answers(out.ImageList, client.get("/v1/images")).items
    assert answers(out.Project, client.get("/v1/project")).usage.instances == 1
    stop = client.post(f"/v1/vms/{vm.id}/stop", json={"force": True})
    wait_for_task(client, stop.headers["Location"])
    assert answers(out.VmAccepted, stop).task.kind == "stop_vm"
    admin = api_client(app, role=Role.ADMIN)  # reconcile is for admins
    reconcile = admin.post("/v1/actions/reconcile")
    wait_for_task(admin, reconcile.headers["Location"])
    report = answers(out.Task, admin.get(reconcile.headers["Location"]))
    assert report.kind == "reconcile" and report.status == "succeeded" and report.result
    gone = client.delete(f"/v1/vms/{vm.id}")
    assert answers(out.VmAccepted, gone).vm.status == "deleting"
    wait_for_task(client, gone.headers["Location"])
    assert answers(out.ErrorResponse, client.get(f"/v1/vms/{vm.id}")).error.code == "not_found"
    assert answers(out.Health, client.get("/healthz")).status == "ok"
    assert answers(out.Readiness, client.get("/readyz")).checks.database == "ok"


def test_a_failed_tasks_error_validates(client: FlaskClient, worker: WorkerProcess, failpoint: Any) -> None:
    failpoint("create_vm.mark_running", "raise")
    created = client.post("/v1/vms", json=vm_body("doc-2"))
    wait_for_task(client, created.headers["Location"])
    failed = answers(out.Task, client.get(created.headers["Location"]))
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "step_failed"
    assert {step.status for step in failed.steps} >= {"failed"}
