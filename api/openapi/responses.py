"""What the API answers, as pydantic models: the OpenAPI document's response schemas.

api/presenters.py (and api/task_reads.py for GET /v1/tasks/<id>) stay the one place rows become JSON,
without a model in the request path; these models describe that JSON, and the tests validate the
presenters' output against them (tests/unit/test_response_models.py), so the two cannot drift apart.
Every field is required and nothing else is allowed, so a key added or dropped on one side fails there."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import IPV4_PATTERN, DnsLabel
from common.networks import MAX_PREFIX, MIN_PREFIX
from common.states import PowerState, StepStatus, TaskKind, TaskStatus, VmStatus


class _Answer(BaseModel):
    # Strict and closed: validating the presenters' JSON with these (in the tests) is as exacting as the
    # document's JSON Schema: "1" is no integer, and a key more or less fails.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Address(_Answer):
    """A NIC of a VM and the address it holds (from the create's acceptance until the VM is deleted)."""

    network: DnsLabel = Field(description="The network's name.")
    network_id: uuid.UUID
    mac: str = Field(pattern=r"^52:54:00(:[0-9a-f]{2}){3}$")
    ip: str = Field(pattern=IPV4_PATTERN)


class Vm(_Answer):
    """A VM. `id` is also its libvirt domain's UUID."""

    id: uuid.UUID
    name: DnsLabel = Field(description="Unique among the project's live VMs.")
    project: DnsLabel = Field(description="The name of the project the VM belongs to.")
    image: DnsLabel
    vcpus: int = Field(ge=1)
    memory_mib: int = Field(ge=1)
    disk_gib: int = Field(ge=1)
    status: VmStatus = Field(description="`deleted` only in the answer to a DELETE that finished at once.")
    power_state: PowerState
    host: DnsLabel
    addresses: list[Address] = Field(description="Its NICs, eth0 first.")
    key_name: DnsLabel | None = Field(description="The keypair whose public key the guest was given.")
    user_data_sha256: str | None = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="The SHA-256 of the user-data's UTF-8 bytes (the user-data is not shown back).",
    )
    latest_task_id: uuid.UUID | None = Field(
        description="The VM's newest task (`GET /v1/vms/<id>/tasks` lists them all, newest first)."
    )
    created_at: datetime
    updated_at: datetime


class Error(_Answer):
    """What went wrong: a code to act on, a message for people, and details (a dict, per code)."""

    code: str = Field(examples=["name_taken"])
    message: str = Field(examples=["A VM named 'demo-1' already exists."])
    details: dict[str, Any] = Field(examples=[{"name": "demo-1"}])


class ErrorResponse(_Answer):
    """The one shape of every error the API answers."""

    error: Error


class TaskStep(_Answer):
    """One step of a task's saga, in the order the saga runs them."""

    name: str
    status: StepStatus
    error: str | None
    undo_error: str | None
    started_at: datetime
    finished_at: datetime | None


class RequestedBy(_Answer):
    """Who asked for a task: the token (its id and label) and its project."""

    token_id: uuid.UUID
    token_name: str | None
    project: DnsLabel


class Task(_Answer):
    """A durable request: what clients poll until `status` is `succeeded` or `failed`."""

    id: uuid.UUID
    kind: TaskKind
    status: TaskStatus
    vm_id: uuid.UUID | None = Field(description="`null` for `reconcile`.")
    host: DnsLabel
    attempts: int = Field(ge=0, description="Runs so far; more than 1 after a recovery.")
    requested_by: RequestedBy | None = Field(description="`null` for the reconciliations beat schedules.")
    steps: list[TaskStep]
    result: dict[str, Any] | None = Field(
        description='`{"vm_id": ...}` on success, with how a stop went (`shutdown`: `graceful`, `forced` or '
        "`already_off`; `waited_s`) or which reboot (`reboot`: `acpi` or `reset`; `confirmed`); a "
        "reconcile's report."
    )
    error: Error | None = Field(
        description="`step_failed`, `task_failed`, `cancelled`, `reconcile_failed`, ..."
    )
    created_at: datetime
    queued_at: datetime | None = Field(description="When it was handed to the queue; `null` = not yet.")
    started_at: datetime | None
    finished_at: datetime | None
    version: str = Field(
        pattern=r"^[0-9a-f]{32}$",
        description="Changes whenever the task or one of its steps does (the answer's ETag too): pass "
        "it as `seen` with `wait` to wait for the next change.",
    )


class Image(_Answer):
    """A base image VMs can be built from (registered with `iaas-admin image import`)."""

    id: uuid.UUID
    name: DnsLabel
    host: DnsLabel
    format: str
    size_bytes: int = Field(ge=0)
    virtual_size_bytes: int = Field(ge=0)
    checksum_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: datetime


class Flavor(_Answer):
    """A named VM size, shared by every project: `POST /v1/vms` takes `flavor` instead of the sizes."""

    name: DnsLabel
    vcpus: int = Field(ge=1)
    memory_mib: int = Field(ge=1)
    disk_gib: int = Field(ge=1)
    created_at: datetime


class Keypair(_Answer):
    """An SSH public key of the caller's project."""

    id: uuid.UUID
    name: DnsLabel = Field(description="Unique in the project.")
    type: Literal[
        "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"
    ]
    public_key: str = Field(description="The key in OpenSSH's one-line form, with its comment if it had one.")
    fingerprint: str = Field(
        pattern=r"^SHA256:[A-Za-z0-9+/]{43}$",
        description="As `ssh-keygen -l` prints it.",
    )
    created_at: datetime


class Network(_Answer):
    """An isolated IPv4 network of the caller's project."""

    id: uuid.UUID
    name: DnsLabel = Field(description="Unique in the project.")
    cidr: str = Field(pattern=r"^[0-9.]+/[0-9]{2}$", examples=["198.51.100.0/24"])
    prefix: int = Field(ge=MIN_PREFIX, le=MAX_PREFIX)
    size: int = Field(ge=8, description="Addresses in the network.")
    usable: int = Field(ge=6, description="Addresses VMs can have: all but the network's and the broadcast.")
    in_use: int = Field(ge=0, description="Addresses VMs hold.")
    created_at: datetime


class NetworkPage(_Answer):
    """A page of networks, oldest first; pass `next_cursor` back as `cursor` for the next one."""

    items: list[Network]
    next_cursor: str | None


class VmPage(_Answer):
    """A page of VMs, oldest first; pass `next_cursor` back as `cursor` for the next one."""

    items: list[Vm]
    next_cursor: str | None


class TaskPage(_Answer):
    """A page of tasks, newest first; pass `next_cursor` back as `cursor` for the next one."""

    items: list[Task]
    next_cursor: str | None


class ImageList(_Answer):
    items: list[Image]


class FlavorList(_Answer):
    items: list[Flavor]


class KeypairList(_Answer):
    items: list[Keypair]


class VmAccepted(_Answer):
    """202: the VM as the request left it, and the task that carries the request out."""

    vm: Vm
    task: Task


class TaskAccepted(_Answer):
    """202: the task that carries the request out."""

    task: Task


class Health(_Answer):
    status: Literal["ok"]


class ReadyChecks(_Answer):
    database: Literal["ok"]
    broker: Literal["ok"]


class Readiness(_Answer):
    """Both dependencies answer; when one does not, the answer is 503 `not_ready` (an ErrorResponse
    whose `details` has `checks` and `problems`)."""

    status: Literal["ready"]
    checks: ReadyChecks


class Amounts(_Answer):
    """An amount of each resource a quota limits."""

    instances: int = Field(ge=0)
    vcpus: int = Field(ge=0)
    memory_mib: int = Field(ge=0)
    disk_gib: int = Field(ge=0)


class CallerToken(_Answer):
    id: uuid.UUID
    name: str | None
    role: Literal["member", "admin"]


class Project(_Answer):
    """The caller's project: its limits, what its VMs use of them, and the token that asked."""

    id: uuid.UUID
    name: DnsLabel
    limits: Amounts
    usage: Amounts
    token: CallerToken
