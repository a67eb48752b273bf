"""Request schemas, validated at the edge. Limits are generous but keep absurd sizes out."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from common.console import DEFAULT_TAIL_BYTES, MAX_TAIL_BYTES
from common.flavors import SIZE_BOUNDS
from common.names import DNS_LABEL_PATTERN
from common.states import VmStatus

DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)]

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


class VmCreate(_Strict):
    """A VM's size is a flavor's (`flavor`) or given in full (`vcpus`, `memory_mib`, `disk_gib`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "demo-1", "image": "tiny", "vcpus": 1, "memory_mib": 128, "disk_gib": 1},
                {"name": "demo-2", "image": "tiny", "flavor": "small"},
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

    def sizes(self) -> dict[str, int]:
        """The sizes given in the request (call only when `flavor` is None)."""
        return {size: getattr(self, size) for size in SIZES}


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
