"""Rows to JSON, in one place, so every endpoint shows a VM or a task the same way."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from common.ipam import Address
from common.models import Flavor, Image, Keypair, Network, Project, Task, TaskStep, Vm
from common.networks import size_of, usable_addresses
from common.projects import limits_of, usage_of
from common.tokens import Caller


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def sha256_hex(text: str | None) -> str | None:
    """The SHA-256 of a text's UTF-8 bytes, as PostgreSQL's `sha256(convert_to(text, 'UTF8'))` says it."""
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def vm_json(
    vm: Vm,
    project: str,
    addresses: Sequence[Address],
    user_data_sha256: str | None,
    latest_task_id: uuid.UUID | None,
) -> dict[str, Any]:
    """A VM with its NICs (common/ipam.addresses_of, by position), the digest of its user-data
    (never the user-data itself: it may hold secrets, and the client has it) and its newest task."""
    return {
        "id": str(vm.id),
        "name": vm.name,
        "project": project,
        "image": vm.image,
        "vcpus": vm.vcpus,
        "memory_mib": vm.memory_mib,
        "disk_gib": vm.disk_gib,
        "status": vm.status,
        "power_state": vm.power_state,
        "host": vm.host,
        "addresses": [address.as_json() for address in addresses],
        "key_name": vm.key_name,
        "user_data_sha256": user_data_sha256,
        "latest_task_id": str(latest_task_id) if latest_task_id is not None else None,
        "created_at": _iso(vm.created_at),
        "updated_at": _iso(vm.updated_at),
    }


def step_json(step: TaskStep) -> dict[str, Any]:
    return {
        "name": step.name,
        "status": step.status,
        "error": step.error,
        "undo_error": step.undo_error,
        "started_at": _iso(step.started_at),
        "finished_at": _iso(step.finished_at),
    }


def with_version(task: dict[str, Any]) -> dict[str, Any]:
    """The task with its `version`: a digest of everything else it shows, so it changes exactly when
    the task or one of its steps changes as a client sees it. A client that has seen a version can
    wait for the next one (GET /v1/tasks/<id>?wait=&seen=, or the ETag with If-None-Match)."""
    canonical = json.dumps(task, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {**task, "version": hashlib.sha256(canonical.encode()).hexdigest()[:32]}


def task_json(task: Task, queued_at: datetime | None = None) -> dict[str, Any]:
    """A task as the 202 that made it shows it; `queued_at` when it was queued just now (the row's
    mark is written later, off the request path)."""
    return with_version(
        {
            "id": str(task.id),
            "kind": task.kind,
            "status": task.status,
            "vm_id": str(task.vm_id) if task.vm_id else None,
            "host": task.host,
            "attempts": task.attempts,
            "requested_by": task.requested_by,
            "steps": [step_json(step) for step in task.steps],
            "result": task.result,
            "error": task.error,
            "created_at": _iso(task.created_at),
            "queued_at": _iso(queued_at or task.queued_at),
            "started_at": _iso(task.started_at),
            "finished_at": _iso(task.finished_at),
        }
    )


def image_json(image: Image) -> dict[str, Any]:
    return {
        "id": str(image.id),
        "name": image.name,
        "host": image.host,
        "format": image.format,
        "size_bytes": image.size_bytes,
        "virtual_size_bytes": image.virtual_size_bytes,
        "checksum_sha256": image.checksum_sha256,
        "created_at": _iso(image.created_at),
    }


def flavor_json(flavor: Flavor) -> dict[str, Any]:
    return {
        "name": flavor.name,
        "vcpus": flavor.vcpus,
        "memory_mib": flavor.memory_mib,
        "disk_gib": flavor.disk_gib,
        "created_at": _iso(flavor.created_at),
    }


def keypair_json(keypair: Keypair) -> dict[str, Any]:
    return {
        "id": str(keypair.id),
        "name": keypair.name,
        "type": keypair.public_key.split(" ", 1)[0],
        "public_key": keypair.public_key,
        "fingerprint": keypair.fingerprint,
        "created_at": _iso(keypair.created_at),
    }


def project_json(project: Project, caller: Caller) -> dict[str, Any]:
    return {
        "id": str(project.id),
        "name": project.name,
        "limits": limits_of(project).as_dict(),
        "usage": usage_of(project).as_dict(),
        "token": {"id": str(caller.token_id), "name": caller.token_name, "role": str(caller.role)},
    }


def network_json(network: Network, in_use: int) -> dict[str, Any]:
    """A network with how many addresses it has (`usable`: all but the network's and the broadcast)
    and how many NICs hold one (`in_use`)."""
    prefix = ipaddress.IPv4Network(network.cidr).prefixlen
    return {
        "id": str(network.id),
        "name": network.name,
        "cidr": str(network.cidr),
        "prefix": prefix,
        "size": size_of(prefix),
        "usable": usable_addresses(prefix),
        "in_use": in_use,
        "created_at": _iso(network.created_at),
    }
