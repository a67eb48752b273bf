"""The hypervisor hosts the control plane knows: a host is known once its worker has started, so a
request is only ever sent to a queue that some worker reads. Each host also records its worker's
Celery node name, so that a remote-control command can be sent to that worker alone."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from common.models import Host


def register(session: Session, name: str, node: str | None = None) -> None:
    """Record that host `name` has a worker (again), whose Celery node name is `node` (if given; else
    the one recorded stays)."""
    statement = insert(Host).values(name=name, node=node)
    node_now = func.coalesce(statement.excluded.node, Host.node)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[Host.name], set_={"last_seen_at": func.now(), "node": node_now}
        )
    )


def is_known(session: Session, name: str) -> bool:
    return session.scalar(select(Host.name).where(Host.name == name)) is not None


def known(session: Session) -> list[str]:
    return list(session.scalars(select(Host.name).order_by(Host.name)))


def node_of(session: Session, name: str) -> str | None:
    """The node name of host `name`'s worker as it last started (None: unknown host, or a worker that
    started before node names were recorded)."""
    return session.scalar(select(Host.node).where(Host.name == name))
