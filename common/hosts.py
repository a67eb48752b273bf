"""The hypervisor hosts the control plane knows: a host is known once its worker has started, so a
request is only ever sent to a queue that some worker reads."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from common.models import Host


def register(session: Session, name: str) -> None:
    """Record that host `name` has a worker (again)."""
    statement = insert(Host).values(name=name)
    session.execute(
        statement.on_conflict_do_update(index_elements=[Host.name], set_={"last_seen_at": func.now()})
    )


def is_known(session: Session, name: str) -> bool:
    return session.scalar(select(Host.name).where(Host.name == name)) is not None


def known(session: Session) -> list[str]:
    return list(session.scalars(select(Host.name).order_by(Host.name)))
