"""Request schemas, validated at the edge. Limits are generous but keep absurd sizes out."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic_core import PydanticCustomError

from common.console import DEFAULT_TAIL_BYTES, MAX_TAIL_BYTES
from common.flavors import SIZE_BOUNDS
from common.ipam import MAX_NICS, NicRequest
from common.names import DNS_LABEL_PATTERN
from common.networks import EXAMPLE as CIDR_EXAMPLE
from common.networks import MAX_PREFIX, MIN_PREFIX
from common.states import TaskKind, TaskStatus, VmStatus

DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)]

# A dotted quad without leading zeros ([0-9], not \d: that would take any script's digits).
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_PATTERN = rf"^({_OCTET}\.){{3}}{_OCTET}$"
Ipv4 = Annotated[str, StringConstraints(pattern=IPV4_PATTERN, max_length=15)]
# cloud-init's user-data, as UTF-8: the NoCloud seed is small, and 64 KiB is what other clouds allow
# (EC2 16 KiB, Nova 64 KiB base64). Checked in bytes by api/vm_requests.py: 400 user_data_too_large.
MAX_USER_DATA_BYTES = 64 * 1024

MIN_VCPUS, MAX_VCPUS = SIZE_BOUNDS["vcpus"]
MIN_MEMORY_MIB, MAX_MEMORY_MIB = SIZE_BOUNDS["memory_mib"]
MIN_DISK_GIB, MAX_DISK_GIB = SIZE_BOUNDS["disk_gib"]


class _Strict(BaseModel):
    # strict: "2" is not 2 and 2.0 is not an int; forbid: a misspelt field is an error, not ignored.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


Vcpus = Annotated[int, Field(ge=MIN_VCPUS, le=MAX_VCPUS)]
MemoryMib = Annotated[int, Field(ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB)]
DiskGib = Annotated[int, Field(ge=MIN_DISK_GIB, le=MAX_DISK_GIB)]
SIZES = ("vcpus", "memory_mib", "disk_gib")


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class NicSpec(_Strict):
    """A NIC on a network, at an address of its own choosing or the lowest free one."""

    network: DnsLabel = Field(description="The network's name or id.")
    ip: Ipv4 = Field(  # type: ignore[assignment]
        default=None,
        description="A host address of the network; left out: the lowest free one.",
        json_schema_extra=_no_default,
    )


class VmCreate(_Strict):
    """A VM's size is a flavor's (`flavor`) or given in full (`vcpus`, `memory_mib`, `disk_gib`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "demo-1", "image": "tiny", "vcpus": 1, "memory_mib": 128, "disk_gib": 1},
                {"name": "demo-2", "image": "tiny", "flavor": "small"},
                {
                    "name": "demo-3",
                    "image": "tiny",
                    "flavor": "small",
                    "networks": ["backend", {"network": "frontend", "ip": "203.0.113.10"}],
                    "key_name": "laptop",
                    "user_data": "#cloud-config\nruncmd:\n  - echo hello > /dev/console\n",
                },
            ]
        }
    )

    name: DnsLabel
    image: DnsLabel
    # Each of these is left out or given, never null: the type has no None, and pydantic does not
    # validate a default, so only a field left out is None (and its schema has no `default: null`).
    # (Hence the ignores: their value is None when left out, which `X | None` would let a client send.)
    flavor: DnsLabel = Field(  # type: ignore[assignment]
        default=None, description="A flavor's name; then no sizes.", json_schema_extra=_no_default
    )
    vcpus: Vcpus = Field(default=None, json_schema_extra=_no_default)  # type: ignore[assignment]
    memory_mib: MemoryMib = Field(default=None, json_schema_extra=_no_default)  # type: ignore[assignment]
    disk_gib: DiskGib = Field(default=None, json_schema_extra=_no_default)  # type: ignore[assignment]
    networks: list[DnsLabel | NicSpec] = Field(
        default=None,  # type: ignore[arg-type]
        max_length=MAX_NICS,
        description="The VM's NICs, in order (eth0 first): each a network's name or id, or "
        '{"network", "ip"} for a chosen address. Left out: no NIC.',
        json_schema_extra=_no_default,
    )
    key_name: DnsLabel = Field(  # type: ignore[assignment]
        default=None,
        description="A keypair of the project: its public key is authorised in the guest.",
        json_schema_extra=_no_default,
    )
    user_data: str = Field(  # type: ignore[assignment]
        default=None,
        description=f"cloud-init user-data, at most {MAX_USER_DATA_BYTES} bytes as UTF-8; not shown "
        "back (the VM shows its `user_data_sha256`).",
        json_schema_extra=_no_default,
    )

    @field_validator("user_data")
    @classmethod
    def _storable_text(cls, value: str) -> str:
        # PostgreSQL's text holds neither NUL nor a lone surrogate (which "\ud800" in JSON makes).
        if "\x00" in value:
            raise PydanticCustomError("user_data_nul", "user_data may not contain NUL characters.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PydanticCustomError("user_data_utf8", "user_data is not valid Unicode text.") from None
        return value

    @model_validator(mode="after")
    def _flavor_or_sizes(self) -> VmCreate:
        given = [size for size in SIZES if getattr(self, size) is not None]
        if self.flavor is not None and given:
            raise PydanticCustomError(
                "flavor_and_sizes",
                "Give either 'flavor' or the sizes (vcpus, memory_mib, disk_gib), not both.",
            )
        if self.flavor is None and len(given) != len(SIZES):
            missing = ", ".join(size for size in SIZES if size not in given)
            raise PydanticCustomError(
                "flavor_or_sizes",
                "Give either 'flavor' (GET /v1/flavors lists them) or all three sizes "
                "(vcpus, memory_mib, disk_gib); missing: {missing}.",
                {"missing": missing},
            )
        return self

    @model_validator(mode="after")
    def _networks_once(self) -> VmCreate:
        named = [nic.network for nic in self.nics()]
        if len(set(named)) != len(named):
            raise PydanticCustomError(
                "networks_repeated", "A network is named twice in 'networks'; a VM has one NIC per network."
            )
        return self

    def sizes(self) -> dict[str, int]:
        """The sizes given in the request (call only when `flavor` is None)."""
        return {size: getattr(self, size) for size in SIZES}

    def nics(self) -> list[NicRequest]:
        """The NICs asked for, in order (none when `networks` is left out)."""
        return [
            NicRequest(nic) if isinstance(nic, str) else NicRequest(nic.network, nic.ip)
            for nic in self.networks or ()
        ]


class PageQuery(BaseModel):
    """A page of a list (api/pagination.py): how many, and where the previous page ended."""

    # Query strings are text: here lax conversion ("10" -> 10) is what a client expects.
    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)


class NetworkListQuery(PageQuery):
    pass


class VmListQuery(PageQuery):
    status: VmStatus | None = None
    name: DnsLabel | None = None
    all_projects: bool = False  # admins only: every project's VMs, each showing its project


class TaskHistoryQuery(PageQuery):
    """A VM's tasks (GET /v1/vms/<id>/tasks), newest first."""

    kind: TaskKind | None = None
    status: TaskStatus | None = None


class TaskListQuery(TaskHistoryQuery):
    """The project's tasks (GET /v1/tasks), newest first."""

    vm_id: uuid.UUID | None = None
    all_projects: bool = False  # admins only: every project's tasks


# What GET /v1/tasks/<id>?wait= holds a request for, at most.
MAX_WAIT_S = 60


class TaskQuery(BaseModel):
    """GET /v1/tasks/<id>: answer at once, or wait for the task to move on from a version seen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wait: float | None = Field(
        default=None,
        gt=0,
        le=MAX_WAIT_S,
        allow_inf_nan=False,
        description="Seconds to wait (at most 60) for the task to change from the version in `seen` "
        "(or in If-None-Match); the answer comes at once when the task has changed already, or when "
        "neither says which version the client has seen.",
    )
    seen: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{32}$",
        description="The `version` of the task the client has seen.",
    )


class NetworkCreate(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "backend", "cidr": CIDR_EXAMPLE}]})

    name: DnsLabel = Field(description="Unique in the project; not shaped like a UUID (that reads as an id).")
    # Checked by common/networks.parse_cidr (400 naming the field, with the address to use when host
    # bits are set), so that a refusal says why; the length only keeps absurd strings out.
    cidr: str = Field(
        max_length=64,
        description=f"An IPv4 network by its network address, prefix /{MIN_PREFIX} to /{MAX_PREFIX}.",
    )


class ConsoleQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tail_bytes: int = Field(
        default=DEFAULT_TAIL_BYTES,
        ge=1,
        le=MAX_TAIL_BYTES,
        description="How many bytes of the end of the log to answer (fewer when the log is shorter).",
    )


class PowerAction(_Strict):
    # stop: skip the graceful wait and pull the plug; reboot: a hard reset instead of an ACPI reboot.
    force: bool = False
