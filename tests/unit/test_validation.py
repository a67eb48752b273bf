"""Request validation at the edge, and the other small pure pieces."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from api.pagination import decode_cursor, encode_cursor
from api.schemas import VmCreate, VmListQuery
from common.config import Settings
from common.errors import InvalidRequest

GOOD = {"name": "web-1", "image": "tiny", "vcpus": 1, "memory_mib": 128, "disk_gib": 1}


@pytest.mark.parametrize("name", ["a", "web-1", "0", "a" * 63, "x-y-z9"])
def test_dns_labels_are_accepted(name: str) -> None:
    assert VmCreate.model_validate({**GOOD, "name": name}).name == name


@pytest.mark.parametrize("name", ["", "a" * 64, "-a", "a-", "A", "a_b", "a.b", "a/b", "..", "<a>", "a b"])
def test_other_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        VmCreate.model_validate({**GOOD, "name": name})


@pytest.mark.parametrize(
    ("field", "value"),
    [("vcpus", 0), ("vcpus", 65), ("vcpus", "1"), ("vcpus", True), ("memory_mib", 63), ("disk_gib", 0)],
)
def test_sizes_are_bounded_and_strictly_typed(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        VmCreate.model_validate({**GOOD, field: value})


def test_list_query_converts_text_but_bounds_it() -> None:
    assert VmListQuery.model_validate({"limit": "10"}).limit == 10
    with pytest.raises(ValidationError):
        VmListQuery.model_validate({"limit": "0"})


def test_cursor_round_trip_and_garbage() -> None:
    when, row = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(when, row)) == (when, row)
    for garbage in ["%%%", "bm90IGpzb24", encode_cursor(when, row)[:-3]]:
        with pytest.raises(InvalidRequest):
            decode_cursor(garbage)


def test_host_must_be_a_dns_label() -> None:
    assert Settings(host="node-1").host == "node-1"
    with pytest.raises(ValidationError):
        Settings(host="Node_1")


def test_empty_environment_values_fall_back_to_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IAAS_DOMAIN_TYPE", "")
    assert Settings().domain_type == "auto"


def test_hosts_and_timeouts_are_checked() -> None:
    assert Settings(hosts="a, b-2").host_list == ["a", "b-2"]
    assert Settings(host="solo").host_list == ["solo"]
    with pytest.raises(ValidationError, match="IAAS_HOSTS"):
        Settings(hosts="ok,Not_Ok")
    with pytest.raises(ValidationError, match="IAAS_STOP_TIMEOUT_S"):
        Settings(stop_timeout_s=200, step_timeout_s=120)
