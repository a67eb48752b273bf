"""Remote-control commands, answered by the worker process itself:

- `hypervisor_inventory`: what this host's libvirt holds (it sees the same hypervisor the tasks use --
  including libvirt's in-process test driver, which no other process can look into);
- `console_tail`: the end of a VM's serial console log, which only this host's worker can read (the
  API sends it to this worker alone, by the node name recorded in `hosts`)."""

from __future__ import annotations

import uuid
from typing import Any

from celery.worker.control import inspect_command

from common.console import CONSOLE_TAIL, MAX_TAIL_BYTES
from worker import console, resources


@inspect_command()
def hypervisor_inventory(state: Any) -> dict[str, Any]:
    settings = resources.settings()
    return {"host": settings.host, **resources.hypervisor().inventory(settings.storage_pool)}


@inspect_command(name=CONSOLE_TAIL, args=[("vm_id", str), ("tail_bytes", int)])
def console_tail(state: Any, vm_id: str, tail_bytes: int) -> dict[str, Any]:
    path = console.log_path(resources.settings(), uuid.UUID(vm_id))
    return console.read_tail(path, max(1, min(int(tail_bytes), MAX_TAIL_BYTES))).to_reply()
