"""Remote-control commands: what this host's libvirt holds, asked with
`app.control.broadcast("hypervisor_inventory", reply=True)`.

Answered by the worker process itself, so it sees the same hypervisor the tasks use -- including
libvirt's in-process test driver, which no other process can look into."""

from __future__ import annotations

from typing import Any

from celery.worker.control import inspect_command

from worker import resources


@inspect_command()
def hypervisor_inventory(state: Any) -> dict[str, Any]:
    return resources.hypervisor().inventory(resources.settings().storage_pool)
