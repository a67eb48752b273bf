"""Request schemas, validated at the edge. Limits are generous but keep absurd sizes out."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from common.console import DEFAULT_TAIL_BYTES, MAX_TAIL_BYTES
from common.names import DNS_LABEL_PATTERN
from common.states import VmStatus

DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)]

MAX_VCPUS = 64
MAX_MEMORY_MIB = 512 * 1024
MAX_DISK_GIB = 16 * 1024


class _Strict(BaseModel):
    # strict: "2" is not 2 and 2.0 is not an int; forbid: a misspelt field is an error, not ignored.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class VmCreate(_Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "demo-1", "image": "tiny", "vcpus": 1, "memory_mib": 128, "disk_gib": 1}]
        }
    )

    name: DnsLabel
    image: DnsLabel
    vcpus: int = Field(ge=1, le=MAX_VCPUS)
    memory_mib: int = Field(ge=64, le=MAX_MEMORY_MIB)
    disk_gib: int = Field(ge=1, le=MAX_DISK_GIB)


class VmListQuery(BaseModel):
    # Query strings are text: here lax conversion ("10" -> 10) is what a client expects.
    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)
    status: VmStatus | None = None
    name: DnsLabel | None = None
    all_projects: bool = False  # admins only: every project's VMs, each showing its project


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
