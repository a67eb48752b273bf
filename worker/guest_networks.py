"""Making and removing a host's libvirt networks without racing the sagas that use them.

A libvirt network exists on a host while some VM there may use it: a create makes it (a saga step),
and it goes when the project network is deleted, when a failed create's undo finds nothing else on
it, or when reconciliation finds it orphaned. Several worker processes act on one host at once, so
"is anything on it? then remove it" and "make sure it exists, then start a domain on it" take the
same PostgreSQL advisory lock: a removal never slips between another saga's check and its start.
(An advisory lock rather than a file lock: it goes with the connection when a worker dies.)"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from common.db import transaction
from worker.hypervisor.connection import Hypervisor

log = logging.getLogger(__name__)


@contextmanager
def network_locks(sessions: sessionmaker[Session], names: Iterable[str]) -> Iterator[None]:
    """Hold the locks of `names` (taken in sorted order, so two holders never deadlock) until exit."""
    with transaction(sessions) as session:
        for name in sorted(set(names)):
            session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"mini-iaas:net:{name}"}
            )
        yield


def ensure_networks(
    hv: Hypervisor,
    sessions: sessionmaker[Session],
    names: Iterable[str],
    then: Callable[[], None] | None = None,
) -> None:
    """Make sure each network exists, under the networks' locks, then run `then` still holding them:
    a start made with the networks present (they are made again here if a failed create's undo
    removed one after this VM's own network step -- its domain was not defined yet, so it did not
    count)."""
    names = list(names)
    if not names:
        if then is not None:
            then()
        return
    with network_locks(sessions, names):
        for name in names:
            hv.ensure_network(name)
        if then is not None:
            then()


def remove_unused_networks(
    hv: Hypervisor, sessions: sessionmaker[Session], names: Iterable[str]
) -> list[str]:
    """Remove each network no defined domain has an interface on; the ones removed."""
    names = list(names)
    if not names:
        return []
    removed = []
    with network_locks(sessions, names):
        in_use = hv.networks_in_use()
        for name in names:
            if name in in_use:
                log.info("network %s is still in use on this host; kept", name)
            elif hv.remove_network(name):
                removed.append(name)
    return removed
