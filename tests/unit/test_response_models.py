"""api/presenters.py's output against the response models of the OpenAPI document: for any row
Hypothesis makes, the JSON the API would send validates (every key there, none more, each typed)."""

from __future__ import annotations

import base64
import ipaddress
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from api.keypairs import KEY_TYPES
from api.openapi import responses as out
from api.presenters import (
    flavor_json,
    image_json,
    keypair_json,
    network_json,
    project_json,
    sha256_hex,
    task_json,
    vm_json,
)
from common.ipam import Address, random_mac
from common.models import Flavor, Image, Keypair, Network, Project, Task, TaskStep, Vm
from common.names import DNS_LABEL_PATTERN
from common.networks import MAX_PREFIX, MIN_PREFIX
from common.states import PowerState, StepStatus, TaskKind, TaskStatus, VmStatus
from common.tokens import Caller, Role

labels = st.from_regex(DNS_LABEL_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 63 and "\n" not in s)
times = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.just(timezone(timedelta(hours=1))),
)
json_objects = st.dictionaries(
    st.text(max_size=5), st.none() | st.integers() | st.text(max_size=5), max_size=3
)
errors = st.fixed_dictionaries({"code": st.text(min_size=1), "message": st.text(), "details": json_objects})

vms = st.builds(
    Vm, id=st.uuids(), name=labels, image=labels, vcpus=st.integers(1, 64), memory_mib=st.integers(64, 2**19),
    disk_gib=st.integers(1, 2**14), status=st.sampled_from(VmStatus), power_state=st.sampled_from(PowerState),
    host=labels, created_at=times, updated_at=times, key_name=st.none() | labels,
    user_data=st.none() | st.text(max_size=50),
)  # fmt: skip
addresses = st.lists(
    st.builds(
        Address, position=st.integers(0, 7), network=labels, network_id=st.uuids(),
        mac=st.builds(random_mac), ip=st.ip_addresses(v=4).map(str),
    ),
    max_size=8,
)  # fmt: skip
networks = st.builds(
    lambda network_id, name, address, prefix, created_at: Network(
        id=network_id, name=name, created_at=created_at,
        cidr=str(ipaddress.IPv4Network((address, prefix), strict=False)),
    ),
    st.uuids(), labels, st.ip_addresses(v=4), st.integers(MIN_PREFIX, MAX_PREFIX), times,
)  # fmt: skip


def shown_vm(
    vm: Vm, project: str, nics: list[Address] | None = None, latest_task_id: uuid.UUID | None = None
) -> dict[str, Any]:
    return vm_json(vm, project, nics or [], sha256_hex(vm.user_data), latest_task_id)


steps = st.builds(
    TaskStep, name=st.text(min_size=1, max_size=20), status=st.sampled_from(StepStatus),
    error=st.none() | st.text(), undo_error=st.none() | st.text(),
    started_at=times, finished_at=st.none() | times,
)  # fmt: skip
tasks = st.builds(
    Task, id=st.uuids(), kind=st.sampled_from(TaskKind), status=st.sampled_from(TaskStatus),
    vm_id=st.none() | st.uuids(), host=labels, attempts=st.integers(0, 10), steps=st.lists(steps, max_size=4),
    requested_by=st.none() | st.builds(
        lambda token_id, name, project: {"token_id": str(token_id), "token_name": name, "project": project},
        st.uuids(), st.none() | st.text(min_size=1, max_size=63), labels,
    ),
    result=st.none() | json_objects, error=st.none() | errors, created_at=times, queued_at=st.none() | times,
    started_at=st.none() | times, finished_at=st.none() | times,
)  # fmt: skip
images = st.builds(
    Image, id=st.uuids(), name=labels, host=labels, format=st.sampled_from(["qcow2"]),
    size_bytes=st.integers(0, 2**40), virtual_size_bytes=st.integers(0, 2**40),
    checksum_sha256=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), created_at=times,
)  # fmt: skip

flavors = st.builds(
    Flavor, name=labels, vcpus=st.integers(1, 64), memory_mib=st.integers(64, 2**19),
    disk_gib=st.integers(1, 2**14), created_at=times,
)  # fmt: skip
fingerprints = st.binary(min_size=32, max_size=32).map(
    lambda digest: "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
)
keypairs = st.builds(
    Keypair, id=st.uuids(), project_id=st.uuids(), name=labels, fingerprint=fingerprints, created_at=times,
    public_key=st.builds(
        lambda kind, blob, comment: f"{kind} {base64.b64encode(blob).decode()} {comment}".rstrip(),
        st.sampled_from(KEY_TYPES), st.binary(min_size=1, max_size=64), st.text(max_size=20),
    ),
)  # fmt: skip


def as_sent(value: Any) -> str:
    """What the client receives: the presenter's dict through JSON."""
    return json.dumps(value)


amounts = st.integers(0, 2**31 - 1)
projects = st.builds(
    Project, id=st.uuids(), name=labels, max_instances=amounts, max_vcpus=amounts, max_memory_mib=amounts,
    max_disk_gib=amounts, used_instances=amounts, used_vcpus=amounts, used_memory_mib=amounts,
    used_disk_gib=amounts,
)  # fmt: skip
callers = st.builds(
    Caller, token_id=st.uuids(), token_name=st.none() | st.text(min_size=1, max_size=63),
    role=st.sampled_from(Role), project_id=st.uuids(), project=labels, expires_at=st.none() | times,
)  # fmt: skip


@given(vms, labels, tasks, addresses)
def test_a_vm_and_its_task_as_the_api_shows_them(
    vm: Vm, project: str, task: Task, nics: list[Address]
) -> None:
    shown = out.Vm.model_validate_json(as_sent(shown_vm(vm, project, nics)))
    assert shown.id == vm.id and [address.ip for address in shown.addresses] == [nic.ip for nic in nics]
    assert out.Task.model_validate_json(as_sent(task_json(task))).steps == [
        out.TaskStep.model_validate_json(as_sent(step)) for step in task_json(task)["steps"]
    ]
    accepted = {"vm": shown_vm(vm, project, latest_task_id=task.id), "task": task_json(task)}
    assert out.VmAccepted.model_validate_json(as_sent(accepted)).vm.latest_task_id == task.id
    out.TaskAccepted.model_validate_json(as_sent({"task": task_json(task)}))
    out.TaskPage.model_validate_json(as_sent({"items": [task_json(task)], "next_cursor": "x"}))
    out.VmPage.model_validate_json(as_sent({"items": [shown_vm(vm, project)], "next_cursor": None}))


@given(networks, st.integers(0, 2**16))
def test_a_network_as_the_api_shows_it(network: Network, in_use: int) -> None:
    shown = out.Network.model_validate_json(as_sent(network_json(network, in_use)))
    assert shown.usable == shown.size - 2 and shown.cidr == network.cidr
    out.NetworkPage.model_validate_json(
        as_sent({"items": [network_json(network, in_use)], "next_cursor": None})
    )


@given(projects, callers)
def test_a_project_as_the_api_shows_it(project: Project, caller: Caller) -> None:
    assert out.Project.model_validate_json(as_sent(project_json(project, caller))).name == project.name


@given(images)
def test_an_image_as_the_api_shows_it(image: Image) -> None:
    out.ImageList.model_validate_json(as_sent({"items": [image_json(image)]}))


@given(flavors)
def test_a_flavor_as_the_api_shows_it(flavor: Flavor) -> None:
    out.FlavorList.model_validate_json(as_sent({"items": [flavor_json(flavor)]}))


@given(keypairs)
def test_a_keypair_as_the_api_shows_it(keypair: Keypair) -> None:
    shown = out.Keypair.model_validate_json(as_sent(keypair_json(keypair)))
    assert shown.fingerprint == keypair.fingerprint and keypair.public_key.startswith(shown.type)
    out.KeypairList.model_validate_json(as_sent({"items": [keypair_json(keypair)]}))


@given(tasks)
def test_a_task_s_version_changes_with_what_it_shows(task: Task) -> None:
    shown = task_json(task)
    assert task_json(task)["version"] == shown["version"]  # the same state, the same version
    assert task_json(task, datetime(2001, 1, 1, tzinfo=UTC))["version"] != shown["version"] or (
        shown["queued_at"] == datetime(2001, 1, 1, tzinfo=UTC).isoformat()
    )


@given(vms, st.sampled_from(["host", "created_at", "status", "project"]))
def test_a_key_more_or_less_than_the_model_has_fails(vm: Vm, key: str) -> None:
    shown = shown_vm(vm, "a-project")
    with pytest.raises(ValidationError):
        out.Vm.model_validate_json(as_sent({**shown, "owner": "p"}))
    with pytest.raises(ValidationError):
        out.Vm.model_validate_json(as_sent({k: v for k, v in shown.items() if k != key}))
