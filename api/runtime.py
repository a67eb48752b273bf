"""Per-app resources (settings, database engine, Celery producer, the metrics' state gauges) and the
per-request session."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery import Celery
from flask import Flask, current_app, g
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from api.task_events import TaskEvents
from common.config import Settings
from common.db import make_autocommit_engine, make_engine, make_session_factory
from common.dispatch import QueuedMarks
from common.metrics import StateCollector
from common.queue import make_celery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    celery: Celery
    # One-statement reads (GET /v1/tasks/<id>) and hint writes (the outbox's `queued_at`).
    autocommit: Engine
    queued_marks: QueuedMarks
    # The gauges GET /metrics reads at each scrape (api/metrics.py).
    state_metrics: StateCollector
    # The process's one LISTEN connection, waking the requests that wait for a task to change.
    task_events: TaskEvents

    @classmethod
    def install(cls, app: Flask, settings: Settings) -> Runtime:
        engine = make_engine(settings.database_url, pre_ping=False)
        autocommit = make_autocommit_engine(settings.database_url)
        runtime = cls(
            settings,
            engine,
            make_session_factory(engine),
            make_celery(settings),
            autocommit,
            QueuedMarks(autocommit),
            StateCollector(autocommit, settings.broker_url),
            TaskEvents(settings.database_url),
        )
        app.extensions["iaas"] = runtime
        app.teardown_appcontext(_close_session)
        return runtime

    def close(self) -> None:
        """Close every database connection, the listener's too (tests make many apps in one process)."""
        self.task_events.close()
        self.engine.dispose()
        self.autocommit.dispose()
        self.state_metrics.close()


def runtime() -> Runtime:
    return current_app.extensions["iaas"]


def db() -> Session:
    """The request's session. The view (the request boundary) commits; nothing below it does."""
    if "db" not in g:
        g.db = runtime().sessions()
    return g.db


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db", None)
    if session is None:
        return
    try:
        session.close()
    except DBAPIError as exc:  # the database went away mid-request: the answer (a 503) is already made
        log.warning("closing a session on a lost database connection: %s", exc.orig)
