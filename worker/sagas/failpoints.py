"""Named failure points for tests, inert unless set.

A point is named `<saga>.<step>` (just before the step acts) or `<saga>.<step>.done` (it acted, the
journal does not know yet). Actions: `raise` makes the step fail; `pause` holds the worker there until
the point is cleared -- so a test can SIGKILL it at an exact step boundary. Points come from
`IAAS_FAILPOINTS="create_vm.start_domain=raise,..."` and, when `IAAS_FAILPOINTS_TABLE=true`, from
the `failpoints` table, which tests change while the worker runs."""

from __future__ import annotations

import logging
import time
import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from common.db import db_retrying, transaction
from common.models import Failpoint

log = logging.getLogger(__name__)

ACTIONS = ("raise", "pause")
PAUSE_POLL_S = 0.05


class FailpointTriggered(Exception):
    """Raised by a failpoint set to `raise`: stands for any failure of the step it precedes."""


def parse(spec: str) -> dict[str, str]:
    points: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        if not name.strip() or action not in ACTIONS:
            raise ValueError(f"failpoint {item!r}: write name=raise or name=pause")
        points[name.strip()] = action
    return points


class Failpoints:
    def __init__(
        self, static: dict[str, str], sessions: sessionmaker[Session] | None = None, retry_s: float = 60
    ) -> None:
        self.static = static
        self.sessions = sessions  # None: the table is not consulted (production)
        self.retry_s = retry_s  # reads ride out a database outage like the rest of the bookkeeping

    def hit(self, name: str, task_id: uuid.UUID | None = None) -> None:
        action = self.static.get(name) or self._table_action(name)
        if action is None:
            return
        log.warning("failpoint %s: %s (task %s)", name, action, task_id)
        self._record_hit(name, task_id)
        if action == "raise":
            raise FailpointTriggered(f"failpoint {name} triggered")
        while self._table_action(name) == "pause" or self.static.get(name) == "pause":
            time.sleep(PAUSE_POLL_S)  # held here on purpose until a test clears the point (or kills us)

    def _table_action(self, name: str) -> str | None:
        sessions = self.sessions
        if sessions is None:
            return None

        def read() -> str | None:
            with sessions() as session:
                return session.scalar(select(Failpoint.action).where(Failpoint.name == name))

        return db_retrying(self.retry_s)(read)

    def _record_hit(self, name: str, task_id: uuid.UUID | None) -> None:
        sessions = self.sessions
        if sessions is None:
            return

        def write() -> None:
            with transaction(sessions) as session:
                session.execute(
                    update(Failpoint)
                    .where(Failpoint.name == name)
                    .values(hits=Failpoint.hits + 1, last_task_id=task_id)
                )

        db_retrying(self.retry_s)(write)
