"""The end of a VM's serial console log, asked synchronously of the worker of the VM's host.

The API cannot read the log (virtlogd writes it as root, on the VM's host, which may be another
machine), so it sends the `console_tail` remote-control command to that host's worker alone, by the
node name the worker recorded when it started, and waits at most IAAS_CONSOLE_TIMEOUT_S for the answer."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from kombu.exceptions import KombuError
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from api.runtime import runtime
from common import hosts
from common.console import CONSOLE_TAIL, ConsoleTail
from common.errors import BrokerUnavailable, HostUnavailable, IaasError, InvalidState
from common.models import Vm
from common.states import VmStatus

log = logging.getLogger(__name__)


def console_tail(session: Session, vm: Vm, tail_bytes: int) -> ConsoleTail:
    if vm.status == VmStatus.PENDING:
        raise InvalidState(
            f"VM {vm.name!r} is pending: no worker has started building it, so it has no console yet.",
            status=vm.status,
        )
    vm_id, host, node = vm.id, vm.host, hosts.node_of(session, vm.host)
    session.rollback()  # no database transaction stays open while the worker is waited for
    if node is None:
        raise HostUnavailable(
            f"The worker of host {host!r} has not started since workers record their node name; "
            "restart it, then retry.",
            host=host,
        )
    reply = _ask(node, vm_id, host, tail_bytes)
    if "error" in reply:
        log.error("console of VM %s: the worker of host %s failed: %s", vm_id, host, reply["error"])
        raise IaasError(f"The worker of host {host!r} could not read the console log; see its log.")
    return ConsoleTail.from_reply(reply)


def _ask(node: str, vm_id: uuid.UUID, host: str, tail_bytes: int) -> dict[str, Any]:
    """The reply of worker `node` to `console_tail`, sent to it alone."""
    timeout = runtime().settings.console_timeout_s
    try:
        replies = runtime().celery.control.broadcast(
            CONSOLE_TAIL,
            arguments={"vm_id": str(vm_id), "tail_bytes": tail_bytes},
            destination=[node],
            reply=True,
            limit=1,
            timeout=timeout,
        )
    except (KombuError, RedisError, OSError) as exc:
        log.warning("console of VM %s: the broker refused the command: %s", vm_id, exc)
        raise BrokerUnavailable("The message broker cannot be reached; retry in a few seconds.") from exc
    reply: dict[str, Any] | None = next((answer[node] for answer in replies if node in answer), None)
    if reply is None:
        raise HostUnavailable(
            f"The worker of host {host!r} ({node}) does not answer within {timeout:g} s; it may be "
            "stopped or overloaded. Retry later.",
            host=host,
            timeout_s=timeout,
        )
    return reply
