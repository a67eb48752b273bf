"""The table of routes the OpenAPI document describes: for each, the method, the path, the Flask
endpoint that serves it, its parameters, its request model and its answers by status.

tests/integration/test_openapi_document.py holds this table against Flask's url_map both ways, so a
route added to a blueprint and not here (or the other way round) fails the suite."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from api.openapi import responses as out
from api.openapi.page import ASSETS
from api.schemas import (
    ConsoleQuery,
    NetworkCreate,
    NetworkListQuery,
    PowerAction,
    TaskHistoryQuery,
    TaskListQuery,
    TaskQuery,
    VmCreate,
    VmListQuery,
)
from api.views.actions import ReconcileRequest
from api.views.keypairs import KeypairCreate
from common.names import DNS_LABEL_PATTERN

JSON = "application/json"
UUID = {"type": "string", "format": "uuid"}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes the request safe to retry: the same key with the same request gets the first "
    "answer back. A fresh key (a UUID does well) for every new request; keys live 24 h.",
    # api/idempotency.validate_key: 1 to 255 printable ASCII characters.
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}
TASK_LOCATION = {
    "description": "The task's address, to poll: `/v1/tasks/<id>`.",
    "required": True,
    "schema": {"type": "string", "pattern": "^/v1/tasks/[0-9a-f-]{36}$"},
}


@dataclass(frozen=True)
class Reply:
    """One answer of a route: a JSON body of `model`'s shape, or `media_types` of their own."""

    description: str
    model: type[BaseModel] | None = None
    media_types: tuple[str, ...] = (JSON,)
    headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    links: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # OpenAPI's: what to call next


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # in OpenAPI's form: /v1/vms/{vm_id}
    endpoint: str  # Flask's endpoint name: blueprint.function
    tag: str
    summary: str
    replies: Mapping[int, Reply]
    path_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    idempotency_key: bool = False
    headers: tuple[Mapping[str, Any], ...] = ()  # header parameters besides Idempotency-Key
    public: bool = False  # no bearer token needed
    description: str = ""


# Why each error status happens, with the codes a client can act on.
ERROR_WHEN = {
    400: "`invalid_request`: a field is missing, mistyped, out of range or unknown (`details.fields`), "
    "the body is not an object, or a bad `cursor` or `Idempotency-Key`; `invalid_json`: the body is not "
    "JSON text, or nests deeper than 32 levels (`details.max_depth`).",
    404: "`not_found`: no such id in the caller's project (or not a UUID).",
    409: "`vm_busy`: the VM has a task in progress (`details.task_id`, `kind`, `status`); `invalid_state`: "
    "the VM's status "
    "does not allow this (`details.status`).",
    413: "`request_entity_too_large`: the body is over 64 KiB.",
    415: "`unsupported_media_type`: the body was not sent as `application/json`.",
    422: "`idempotency_key_reused`: this `Idempotency-Key` was used for a different request.",
    503: "`database_unavailable`: PostgreSQL cannot be reached; retry.",
}
CREATE_400 = (
    f"{ERROR_WHEN[400]} `invalid_request` also when the body has both `flavor` and sizes, or neither, "
    "or names a network twice; "
    "`unknown_flavor`: no flavor of that name; `unknown_image`: no image of that name; "
    "`disk_too_small`: `disk_gib` is below the image's size (`details.minimum_disk_gib`); "
    "`unknown_network`, `unknown_keypair`: the project has none of that name or id (`details.network`, "
    "`details.key_name`); `invalid_ip`: the `ip` asked for is no host address of its network "
    "(`details.first`, `details.last`); `user_data_too_large`: over 64 KiB as UTF-8 "
    "(`details.max_bytes`, `details.bytes`)."
)
KEYPAIR_400 = (
    f"{ERROR_WHEN[400]} `invalid_public_key`: not one OpenSSH public key line of an accepted type "
    "(ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa of 2048 bits or more), or over 16 KiB."
)
KEYPAIR_404 = "`not_found`: no keypair of that name in the caller's project."
# A name that is no DNS label names nothing: 404, as for an unknown one.
NAME = {"name": {"type": "string", "pattern": DNS_LABEL_PATTERN, "maxLength": 63}}
CREATE_409 = (
    "`name_taken`: a live VM of the project already has that name (`details.name`); `ip_in_use`: the "
    "`ip` asked for is another NIC's (`details.network`, `details.ip`); `network_full`: a network has no "
    "free address (`details.network`, `details.cidr`). Nothing is recorded then."
)
CREATE_413 = (
    "`request_entity_too_large`: the body is over 448 KiB (room for 64 KiB of user-data, however JSON "
    "escapes it)."
)
NETWORK_400 = (
    f"{ERROR_WHEN[400]} `invalid_request` also for a `cidr` that is no IPv4 network, has host bits set "
    "(`details.network` is the one to use), or a prefix outside /16 to /29, and for a `name` shaped like "
    "a UUID (`details.fields` names the field)."
)
NETWORK_404 = "`not_found`: no network of that id or name in the caller's project."
# A network by its id or its name: both are DNS labels (a UUID is one); anything else names nothing.
NETWORK_REF = {"reference": {"type": "string", "pattern": DNS_LABEL_PATTERN, "maxLength": 63}}
NETWORK_LOCATION = {
    "description": "The network's address: `/v1/networks/<id>`.",
    "required": True,
    "schema": {"type": "string", "pattern": "^/v1/networks/[0-9a-f-]{36}$"},
}


def errors(*statuses: int, **when: str) -> dict[int, Reply]:
    """The error answers `statuses`, described by ERROR_WHEN or by `when` (keyed `e400`, ...)."""
    return {
        status: Reply(when.get(f"e{status}", ERROR_WHEN[status]), out.ErrorResponse) for status in statuses
    }


def link(operation_id: str, description: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation_id, "description": description, "parameters": parameters}


def vm_links(vm_id: str) -> dict[str, dict[str, Any]]:
    """What can be done with a VM whose id is at `vm_id` (a runtime expression) in an answer."""
    return {
        "GetVm": link("get_vm", "Read the VM.", vm_id=vm_id),
        "GetVmConsole": link("get_vm_console", "Read the end of the VM's console log.", vm_id=vm_id),
        "ListVmTasks": link("list_vm_tasks", "List the VM's tasks, newest first.", vm_id=vm_id),
        "DeleteVm": link("delete_vm", "Delete the VM.", vm_id=vm_id),
        **{
            f"{action.title()}Vm": link(f"{action}_vm", f"{action.title()} the VM.", vm_id=vm_id)
            for action in ("start", "stop", "reboot")
        },
    }


def network_links(network_id: str) -> dict[str, dict[str, Any]]:
    return {
        "GetNetwork": link("get_network", "Read the network.", reference=network_id),
        "DeleteNetwork": link("delete_network", "Delete the network.", reference=network_id),
    }


GET_TASK = {"GetTask": link("get_task", "Poll the task.", task_id="$response.body#/task/id")}
IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "The ETag of an earlier answer: with `wait`, wait for the task to change from it; "
    "without, 304 while it has not.",
    "schema": {"type": "string", "maxLength": 1000},
}
ETAG = {
    "ETag": {
        "description": "The task's `version`, quoted.",
        "required": True,
        "schema": {"type": "string", "pattern": '^"[0-9a-f]{32}"$'},
    }
}
TASK_PAGE = Reply("A page of tasks, newest first.", out.TaskPage)
ACCEPTED_VM = Reply(
    "Accepted: the VM and the task that carries the request out.",
    out.VmAccepted,
    headers={"Location": TASK_LOCATION},
    links={**vm_links("$response.body#/vm/id"), **GET_TASK},
)
VM_ID = {"vm_id": UUID}
KEYPAIR_LOCATION = {
    "description": "The keypair's address: `/v1/keypairs/<name>`.",
    "required": True,
    "schema": {"type": "string", "pattern": "^/v1/keypairs/[a-z0-9-]{1,63}$"},
}
CONSOLE_HEADERS = {
    "X-Console-Log-Size": {
        "description": "The log's whole size in bytes; 0 (and an empty text) when the VM has no log yet.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "X-Console-Offset": {
        "description": "Where in the log the answered text starts, in bytes.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
}
CONSOLE_409 = "`invalid_state`: the VM is `pending`: no worker has started building it, so it has no console."
CONSOLE_503 = (
    f"{ERROR_WHEN[503]} `host_unavailable`: the worker of the VM's host does not answer in time "
    "(`details.host`); `broker_unavailable`: Redis cannot be reached."
)
# What any request that makes a task can be refused for, before its target is looked at.
TASK_REQUEST = (400, 413, 415, 422, 503)


def _power(action: str, summary: str) -> Route:
    return Route(
        "POST", f"/v1/vms/{{vm_id}}/{action}", f"vms.{action}_vm", "vms", summary,
        {202: ACCEPTED_VM, **errors(*TASK_REQUEST, 404, 409)},
        path_params=VM_ID, body=PowerAction, body_required=False, idempotency_key=True,
    )  # fmt: skip


ROUTES: tuple[Route, ...] = (
    Route(
        "POST", "/v1/vms", "vms.create_vm", "vms", "Ask for a VM",
        {202: ACCEPTED_VM,
         **errors(*TASK_REQUEST, 409, e400=CREATE_400, e409=CREATE_409, e413=CREATE_413)},
        body=VmCreate, idempotency_key=True,
        description="The VM is built on its image's host; poll the task at `Location` until it has finished. "
        "Its size is a flavor's (`flavor`) or given in full (`vcpus`, `memory_mib`, `disk_gib`): one or the "
        "other, not both. `networks` gives it NICs, in order, with the lowest free address of each network "
        "or the `ip` asked for; the answer shows them in `addresses` already.",
    ),
    Route(
        "GET", "/v1/vms", "vms.list_vms", "vms", "List the VMs",
        {200: Reply("A page of VMs, oldest first.", out.VmPage), **errors(400, 503)},
        query=VmListQuery,
    ),
    Route(
        "GET", "/v1/vms/{vm_id}", "vms.get_vm", "vms", "Read a VM",
        {200: Reply("The VM.", out.Vm, links=vm_links("$response.body#/id")), **errors(404, 503)},
        path_params=VM_ID,
    ),
    Route(
        "GET", "/v1/vms/{vm_id}/console", "vms.get_vm_console", "vms", "Read the end of a VM's console log",
        {200: Reply("The end of the serial console log, as UTF-8 text.", media_types=("text/plain",),
                    headers=CONSOLE_HEADERS),
         **errors(400, 404, 409, 503, e409=CONSOLE_409, e503=CONSOLE_503)},
        path_params=VM_ID, query=ConsoleQuery,
        description="What the guest wrote to its serial port, for a running or stopped VM: the last "
        "`tail_bytes` bytes (64 KiB unless asked, at most 1 MiB), bytes that are not UTF-8 replaced by "
        "U+FFFD. A VM without a log yet answers an empty text and `X-Console-Log-Size: 0`. The API asks "
        "the worker of the VM's host, and waits `IAAS_CONSOLE_TIMEOUT_S` for it.",
    ),
    Route(
        "DELETE", "/v1/vms/{vm_id}", "vms.delete_vm", "vms", "Delete a VM",
        {202: ACCEPTED_VM, **errors(400, 404, 409, 422, 503)}, path_params=VM_ID, idempotency_key=True,
        description="A `pending` VM whose create no worker has started is deleted at once: its status is "
        "`deleted` and the task has `succeeded` already.",
    ),
    _power("start", "Start a stopped VM"),
    _power("stop", 'Stop a running VM (at once with {"force": true})'),
    _power("reboot", 'Reboot a running VM (a hard reset with {"force": true})'),
    Route(
        "POST", "/v1/actions/reconcile", "actions.reconcile", "actions", "Reconcile a host now",
        {202: Reply("Accepted: the reconcile task.", out.TaskAccepted, headers={"Location": TASK_LOCATION},
                    links=GET_TASK),
         **errors(*TASK_REQUEST, 404, e404="`unknown_host`: no worker has ever started on that host.")},
        body=ReconcileRequest, body_required=False, idempotency_key=True,
        description="Admins only. `host` defaults to the API's own `IAAS_HOST` and must be a host whose "
        "worker has started (404 `unknown_host`, with `details.known_hosts`); that host's worker runs it.",
    ),
    Route(
        "GET", "/v1/vms/{vm_id}/tasks", "vms.list_vm_tasks", "vms", "List a VM's tasks, newest first",
        {200: TASK_PAGE, **errors(400, 404, 503)}, path_params=VM_ID, query=TaskHistoryQuery,
        description="Answered after the VM is deleted too, for as long as its tasks are kept "
        "(`IAAS_RETENTION_DAYS`), although `GET /v1/vms/<id>` is then 404.",
    ),
    Route(
        "GET", "/v1/tasks", "tasks.list_tasks", "tasks", "List the project's tasks, newest first",
        {200: TASK_PAGE, **errors(400, 503)}, query=TaskListQuery,
        description="Filtered by `vm_id`, `kind` and `status`; `all_projects=true` (admins only) lists "
        "every project's, the reconciliations beat schedules included.",
    ),
    Route(
        "GET", "/v1/tasks/{task_id}", "tasks.get_task", "tasks", "Read a task, or wait for it to change",
        {200: Reply("The task with its steps.", out.Task, headers=ETAG),
         304: Reply("Not modified: the task is still at the version If-None-Match names.",
                    media_types=(), headers=ETAG),
         **errors(400, 404, 503)},
        path_params={"task_id": UUID}, query=TaskQuery, headers=(IF_NONE_MATCH,),
        description="With `wait` (seconds, at most 60) and the `version` the client has seen (`seen`, or "
        "the ETag in If-None-Match), the answer comes as soon as the task changes from it -- at once if "
        "it has already -- or when the wait is over: 200 either way. PostgreSQL notifies the API of every "
        "change, so the answer follows a change within milliseconds.",
    ),
    Route(
        "GET", "/v1/project", "project.get_project", "project", "The caller's project, its limits and usage",
        {200: Reply("The project.", out.Project), **errors(503)},
    ),
    Route(
        "GET", "/v1/images", "images.list_images", "images", "List the images",
        {200: Reply("Every image, by name.", out.ImageList), **errors(503)},
    ),
    Route(
        "GET", "/v1/images/{name}", "images.get_image", "images", "Read an image",
        {200: Reply("The image.", out.Image), **errors(404, 503, e404="`not_found`: no image of that name.")},
        path_params=NAME,
    ),
    Route(
        "GET", "/v1/flavors", "flavors.list_flavors", "flavors", "List the flavors",
        {200: Reply("Every flavor, smallest first.", out.FlavorList), **errors(503)},
    ),
    Route(
        "POST", "/v1/keypairs", "keypairs.create_keypair", "keypairs", "Add an SSH public key",
        {201: Reply("The keypair.", out.Keypair, headers={"Location": KEYPAIR_LOCATION}),
         **errors(400, 409, 413, 415, 503, e400=KEYPAIR_400,
                  e409="`name_taken`: the project has a keypair of that name (`details.name`).")},
        body=KeypairCreate,
    ),
    Route(
        "GET", "/v1/keypairs", "keypairs.list_keypairs", "keypairs", "List the project's keypairs",
        {200: Reply("The caller's project's keypairs, by name.", out.KeypairList), **errors(503)},
    ),
    Route(
        "GET", "/v1/keypairs/{name}", "keypairs.get_keypair", "keypairs", "Read a keypair",
        {200: Reply("The keypair.", out.Keypair), **errors(404, 503, e404=KEYPAIR_404)},
        path_params=NAME,
    ),
    Route(
        "DELETE", "/v1/keypairs/{name}", "keypairs.delete_keypair", "keypairs", "Delete a keypair",
        {204: Reply("Deleted.", media_types=()), **errors(404, 503, e404=KEYPAIR_404)},
        path_params=NAME,
    ),
    Route(
        "POST", "/v1/networks", "networks.create_network", "networks", "Add an isolated IPv4 network",
        {201: Reply("The network.", out.Network, headers={"Location": NETWORK_LOCATION},
                    links=network_links("$response.body#/id")),
         **errors(400, 409, 413, 415, 503, e400=NETWORK_400,
                  e409="`name_taken`: the project has a network of that name (`details.name`).")},
        body=NetworkCreate,
    ),
    Route(
        "GET", "/v1/networks", "networks.list_networks", "networks", "List the project's networks",
        {200: Reply("A page of the caller's project's networks, oldest first.", out.NetworkPage),
         **errors(400, 503)},
        query=NetworkListQuery,
    ),
    Route(
        "GET", "/v1/networks/{reference}", "networks.get_network", "networks", "Read a network",
        {200: Reply("The network.", out.Network), **errors(404, 503, e404=NETWORK_404)},
        path_params=NETWORK_REF, description="`reference` is the network's id or its name.",
    ),
    Route(
        "DELETE", "/v1/networks/{reference}", "networks.delete_network", "networks", "Delete a network",
        {204: Reply("Deleted.", media_types=()),
         **errors(404, 409, 503, e404=NETWORK_404,
                  e409="`network_in_use`: VMs have NICs on it (`details.vm_ids`); delete them first.")},
        path_params=NETWORK_REF,
        description="`reference` is the network's id or its name. Each host's worker is then asked to "
        "remove its libvirt network.",
    ),
    Route(
        "GET", "/healthz", "health.healthz", "health", "Liveness: the process answers",
        {200: Reply("The process answers.", out.Health)}, public=True,
    ),
    Route(
        "GET", "/readyz", "health.readyz", "health", "Readiness: the database and the broker answer",
        {200: Reply("Both answer.", out.Readiness),
         503: Reply("`not_ready`: `details.checks` says which is down.", out.ErrorResponse)},
        public=True,
    ),
    Route(
        "GET", "/metrics", "metrics.metrics", "health", "Prometheus metrics",
        {200: Reply("Requests, latency and the state gauges in Prometheus' text format.",
                    media_types=("text/plain",))},
        public=True,
        description="Open, like the probes: a scraper carries no token, and it shows counts, never an id "
        "or a name. Keep it to the internal network (docs/operations.md, Metrics).",
    ),
    Route(
        "GET", "/v1/openapi.json", "docs.openapi_json", "docs", "This document",
        {200: Reply("The OpenAPI 3.1 document of this API.", media_types=(JSON,))}, public=True,
    ),
    Route(
        "GET", "/v1/docs", "docs.docs_page", "docs", "A page to browse this document",
        {200: Reply("Swagger UI, served from this API (no other site).", media_types=("text/html",))},
        public=True,
    ),
    Route(
        "GET", "/v1/docs/{asset}", "docs.docs_asset", "docs", "The files of the docs page",
        {200: Reply("The file.", media_types=tuple(sorted(set(ASSETS.values())))), **errors(404)},
        path_params={"asset": {"type": "string", "enum": sorted(ASSETS)}}, public=True,
    ),
)  # fmt: skip
